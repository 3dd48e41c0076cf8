# The evolve image: onnxruntime, numpy and the store clients, no torch.
# Scheduled upgrades run it from cron or a Kubernetes CronJob, e.g.
#   docker run --rm -v /data:/data dmu-migrate \
#     evolve --collection faces --adapter /data/adapters/faces-v2 --uri /data/faces.db
#
# Kubernetes indexed Job, one shard per pod (completionMode: Indexed, completions: 16;
# the Job controller sets JOB_COMPLETION_INDEX in each pod):
#   command: [sh, -c]
#   args: ["dmu-migrate evolve --collection faces --adapter /adapters/faces-v2
#           --uri http://milvus:19530 --shard $JOB_COMPLETION_INDEX/16"]
#
# Training variant (adds torch and onnx for `dmu-migrate train`):
#   docker build --build-arg EXTRAS="[train]" -t dmu-migrate:train .
# Ray variant (--engine ray; the cluster's nodes need the same install):
#   docker build --build-arg EXTRAS="[ray]" -t dmu-migrate:ray .
# Bulk import through MinIO or S3 (--bulk-storage s3://BUCKET/PREFIX; boto3):
#   docker build --build-arg EXTRAS="[s3]" -t dmu-migrate:s3 .
# (install torch==2.13.0 first on hosts where an unpinned torch pulls a CUDA build)
FROM python:3.11-slim

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GRPC_VERBOSITY=ERROR

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dmu_migrate ./dmu_migrate
RUN pip install --no-cache-dir ".${EXTRAS}" \
    && useradd --create-home dmu
USER dmu
WORKDIR /data

ENTRYPOINT ["dmu-migrate"]
CMD ["evolve", "--help"]
