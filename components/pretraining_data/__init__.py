"""Pretraining data: whole-word-masking BERT instances as GZIP TFRecords, streamed.

``create.create_pretraining_data`` is the step's entry point; ``tokenization``
turns text into compact token codes, ``documents`` holds a shard's documents as
integer arrays, ``instances`` makes and masks instances in batches, and
``tfrecord`` writes them as ``tf.train.Example`` records without TensorFlow.
"""
