# The MTM image: the same code serves the portal (gunicorn) and runs the Celery workers (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
# Mount points are created here, owned by the app user, so named volumes start out writable for it.
# collectstatic gets a throwaway key so no secret is written into the image.
RUN useradd --create-home --uid 1000 mtm \
    && mkdir -p /app/var /data/huggingface /data/datasets /data/media /output \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && chown -R mtm:mtm /app/var /data /output

USER mtm
EXPOSE 8000
# Threads: a request waiting on a slow client holds one thread, not a whole process. In compose, nginx (deploy/)
# stands in front and buffers requests; the image on its own must be put behind such a proxy too.
CMD ["gunicorn", "mtm.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--worker-class", "gthread", \
     "--threads", "8", "--timeout", "120"]
