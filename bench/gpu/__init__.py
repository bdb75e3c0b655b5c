"""Parts of bench/gpu_bench.py: stages and plan are pure Python; the rest imports torch and ComfyUI."""
