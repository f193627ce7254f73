"""Views: arrays in, matplotlib figures, images and TensorBoard Projector files out; no scores computed."""
