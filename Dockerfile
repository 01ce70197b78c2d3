FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FLASHCART_ENV=production \
    PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY config.py wsgi.py gunicorn.conf.py ./
COPY flashcart ./flashcart

RUN useradd --system --uid 10001 --no-create-home flashcart
USER flashcart

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=2)"

CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
