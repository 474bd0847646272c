# The relay image: a static outbox binary on a small base.
FROM golang:1.26 AS build
WORKDIR /src
# The SDK is a module of its own (sdk/go.mod), joined to the relay's by go.work.
COPY go.mod go.sum go.work go.work.sum ./
COPY sdk/go.mod sdk/go.sum ./sdk/
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/outbox ./cmd/outbox

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outbox /usr/local/bin/outbox
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/outbox"]
CMD ["relay", "--config", "/etc/outbox/relay.yaml"]
