// Package tracing starts OpenTelemetry tracing when the environment asks
// for it, with the standard OTEL_* variables, and exports spans over
// OTLP/HTTP. It is off by default: then no component is given a tracer
// and none pays for one.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkeyhq/latchkey/internal/buildinfo"
)

// Enabled reports whether the environment turns tracing on:
// OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keep it off.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup starts tracing when Enabled: spans go in batches to the OTLP/HTTP
// endpoint the OTEL_EXPORTER_OTLP_* variables name (default
// http://localhost:4318), sampled as OTEL_TRACES_SAMPLER says (default:
// every trace, or as its parent decided), with service.name from
// OTEL_SERVICE_NAME (default latchkey) and OTEL_RESOURCE_ATTRIBUTES. W3C
// trace context is read from requests and passed to upstreams. Off, it
// returns a nil tracer and a shutdown that does nothing.
func Setup(ctx context.Context, getenv func(string) string) (trace.Tracer, func(context.Context) error, error) {
	none := func(context.Context) error { return nil }
	if !Enabled(getenv) {
		return nil, none, nil
	}
	if p := strings.ToLower(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") + getenv("OTEL_EXPORTER_OTLP_PROTOCOL")); p != "" && !strings.HasPrefix(p, "http/protobuf") {
		return nil, none, fmt.Errorf("tracing: OTLP protocol %q: latchkey exports http/protobuf only", p)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("tracing: %w", err)
	}
	in := buildinfo.Get()
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("latchkey"), semconv.ServiceVersion(in.Version)))
	if err == nil {
		var fromEnv *resource.Resource
		fromEnv, err = resource.New(ctx, resource.WithFromEnv())
		if err == nil {
			res, err = resource.Merge(res, fromEnv)
		}
	}
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, none, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Tracer("github.com/latchkeyhq/latchkey"), tp.Shutdown, nil
}
