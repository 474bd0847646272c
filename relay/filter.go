package relay

import (
	"fmt"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
)

// filter is a compiled CEL filter. The expression sees event_type,
// aggregate_type, aggregate_id, tenant_id, schema_version, content_type,
// headers (map of strings) and payload (the JSON payload decoded; null when it
// is not JSON).
type filter struct {
	src string
	prg cel.Program
}

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

func filterEnv() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		celEnv, celEnvErr = cel.NewEnv(
			cel.Variable("event_type", cel.StringType),
			cel.Variable("aggregate_type", cel.StringType),
			cel.Variable("aggregate_id", cel.StringType),
			cel.Variable("tenant_id", cel.StringType),
			cel.Variable("schema_version", cel.StringType),
			cel.Variable("content_type", cel.StringType),
			cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("payload", cel.DynType),
			cel.CrossTypeNumericComparisons(true),
		)
	})
	return celEnv, celEnvErr
}

// compileFilter compiles a CEL filter expression that must yield a bool.
func compileFilter(src string) (*filter, error) {
	env, err := filterEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("bad CEL filter %q: %v", src, strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("bad CEL filter %q: it yields %s, want bool", src, ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("bad CEL filter %q: %v", src, err)
	}
	return &filter{src: src, prg: prg}, nil
}

// eval reports whether ev passes the filter. An evaluation error (a missing
// payload field, a type mismatch, a result that is not a bool) is returned
// with false: the caller counts it as no match.
func (f *filter) eval(ev *Event, payload any) (bool, error) {
	headers := ev.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	out, _, err := f.prg.Eval(map[string]any{
		"event_type":     ev.EventType,
		"aggregate_type": ev.AggregateType,
		"aggregate_id":   ev.AggregateID,
		"tenant_id":      ev.TenantID,
		"schema_version": ev.SchemaVersion,
		"content_type":   ev.ContentType,
		"headers":        headers,
		"payload":        payload,
	})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("the filter yielded %v (%s), want a bool", out.Value(), out.Type().TypeName())
	}
	return b, nil
}
