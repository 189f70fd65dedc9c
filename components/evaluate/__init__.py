"""Evaluation of converted models (recipe step 11): fill-mask, held-out masked-LM accuracy,
optional fine-tuning. PyTorch only; TFRecords are read without TensorFlow (``tfrecord``)."""
