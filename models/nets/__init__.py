"""The two networks: the report's custom CNN (PyTorch) and the MobileNetV2 transfer model (Keras)."""
