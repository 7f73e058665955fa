"""Model architectures (Keras Applications and tlcut's own small ones) and datasets."""
