"""Loading saved models, predicting, heatmaps, ONNX exports, calibration and thread caps."""
