"""Wan2.2 Animate RunPod worker: one job from MinIO keys to a validated MP4 in MinIO."""
