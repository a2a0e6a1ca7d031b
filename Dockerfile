# The Streamlit app (app/main.py) as a Hugging Face Docker Space: Spaces' Streamlit SDK is deprecated.
# The Space's README front matter needs `sdk: docker` and `app_port: 8501` (README.md, "Deploy").
# Locally: docker build -t blockmask-st . && docker run -p 8501:8501 blockmask-st
# tests/test_spaces.py runs this CMD headless and checks /_stcore/health (no Docker needed).
FROM python:3.11-slim

# Spaces run the container as user 1000
RUN useradd -m -u 1000 user
ENV PYTHONUNBUFFERED=1 \
    HF_HOME=/home/user/.cache/huggingface \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
WORKDIR /home/user/app

# The Gradio Space's list (requirements.txt) without ZeroGPU's `spaces`, plus Streamlit (pyproject's apps
# extra); CPU wheels of torch/torchvision (the same versions, without the CUDA libraries).
COPY requirements.txt .
RUN grep -v '^spaces' requirements.txt > /tmp/requirements.txt \
    && pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -r /tmp/requirements.txt "streamlit>=1.51"

COPY --chown=user . .
# The project itself (bundled models, masks and app files as blockmask_assets / blockmask_app)
RUN pip install --no-cache-dir --no-deps . && rm -rf build *.egg-info

USER user
ENV HOME=/home/user
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "app/main.py", "--server.port", "8501", "--server.address", "0.0.0.0"]
