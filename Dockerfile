# vmaconv as a container image: a static binary (no cgo) on distroless,
# running as an unprivileged user. Credentials come from the environment
# (AWS_ACCESS_KEY_ID, …, or the pod's role), never from arguments.
#
#   docker build -t vmaconv .
#   docker run --rm -e AWS_ENDPOINT_URL -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
#       vmaconv verify --jobs 4 --output jsonl s3://backups/dump/
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/vmaconv ./cmd/vmaconv

# static: CA certificates (for https:// and S3), /tmp, a nonroot user; no
# shell, no libc.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vmaconv /usr/local/bin/vmaconv
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/vmaconv"]
