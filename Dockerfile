# The evolve image: onnxruntime, numpy and the store clients, no torch, installed from
# the pinned set in requirements/evolve.lock. docs/docker.md has the variants, the
# lock's regeneration, the image's size and how to run it on a mounted /data.
#   docker build -t dmu-migrate .
#   docker run --rm --user "$(stat -c %u:%g /data)" -v /data:/data dmu-migrate \
#     evolve --collection faces --adapter /data/adapters/faces-v2 --uri /data/faces.db
#
# Kubernetes indexed Job, one shard per pod (completionMode: Indexed, completions: 16;
# the Job controller sets JOB_COMPLETION_INDEX in each pod):
#   command: [sh, -c]
#   args: ["dmu-entrypoint evolve --collection faces --adapter /adapters/faces-v2
#           --uri http://milvus:19530 --shard $JOB_COMPLETION_INDEX/16"]
#
# Training variant (torch pinned, then onnx and scikit-learn for `dmu-migrate train`):
#   docker build --build-arg EXTRAS="[train]" --build-arg TORCH_INDEX=URL -t dmu-migrate:train .
# Ray variant (--engine ray; the cluster's nodes need the same install):
#   docker build --build-arg EXTRAS="[ray]" -t dmu-migrate:ray .
# Bulk import through MinIO or S3 (--bulk-storage s3://BUCKET/PREFIX; boto3):
#   docker build --build-arg EXTRAS="[s3]" -t dmu-migrate:s3 .
FROM python:3.11-slim

ARG EXTRAS=""
# Installed first, and only when EXTRAS includes train: an unpinned torch would pull a
# multi-GB CUDA build. TORCH_INDEX names an index that serves CPU builds of torch;
# left empty, pip's configured index decides which build of the pin it gets.
ARG TORCH="torch==2.13.0"
ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GRPC_VERBOSITY=ERROR

WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements/evolve.lock requirements/
COPY dmu_migrate ./dmu_migrate
COPY docker/entrypoint.sh /usr/local/bin/dmu-entrypoint
RUN case "$EXTRAS" in \
      *train*) pip install --no-cache-dir ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH" ;; \
    esac \
    && pip install --no-cache-dir --constraint requirements/evolve.lock ".${EXTRAS}" \
    && useradd --create-home --uid 1000 dmu \
    && mkdir -p /data && chown dmu:dmu /data && chmod 0755 /usr/local/bin/dmu-entrypoint
USER dmu
WORKDIR /data

# Checks that the paths the command writes are writable by this user (one line and
# exit 2 if not, naming the owner and the --user that fits), then runs dmu-migrate.
ENTRYPOINT ["dmu-entrypoint"]
CMD ["evolve", "--help"]
