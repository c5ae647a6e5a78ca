"""SPACE, the unsupervised object detector (Stage II-A)."""
