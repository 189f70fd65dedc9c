"""Conversion of Model Garden BERT checkpoints to Hugging Face model directories (recipe step 10).

``tensorbundle`` reads TensorFlow checkpoints without TensorFlow; ``convert`` maps the
variables onto ``BertForPreTraining`` and writes the directory.
"""
