"""The PyTorch trainer: transformers encoders (ModernBERT, RoBERTa, EuroBERT, BERT) pretrained with
dynamic masking from the tokenized shards, on CPU, one GPU, or many through torchrun."""
