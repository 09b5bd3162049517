"""The content service of the seed services, rewritten as an eventkit worker."""
