"""Cloud TPU VMs for training: create, follow, survive preemption, always delete.

- ``control``: the ``google-cloud-tpu`` (``tpu_v2``, REST) client, input checks, node names.
- ``startup``: the VM's startup script, which runs the trainer image with quoted arguments.
- ``orchestrate``: ``train_on_tpu`` (the stage runner) and ``release_tpu`` (the exit task).
- ``cli``: ``bertja tpu create|status|delete|train``.
"""
