"""Downloads (resumable, verified) and source resolution for the recipe's inputs."""
