"""Publishing a converted model to a release location with a generated model card (recipe step 12)."""
