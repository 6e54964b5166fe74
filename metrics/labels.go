package metrics

import (
	"strconv"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/span"
)

// facts are the span attributes the RED histograms read, gathered in one
// pass over span.Attrs. Numbers stay numbers (-1: absent) so that the hot
// path formats nothing: a label value is formatted once, when its series
// is created.
type facts struct {
	method, route, protocolVersion, errorType string
	serverAddress                             string
	rpcSystem, rpcService, rpcMethod          string
	dbSystem, dbOperation, dbNamespace        string
	statusCode, serverPort, grpcStatusCode    int64
	hasMethod, hasRPCSystem, hasDBSystem      bool
}

func gather(s *span.Span) facts {
	f := facts{statusCode: -1, serverPort: -1, grpcStatusCode: -1}
	for _, a := range s.Attrs {
		switch a.Key {
		case string(semconv.HTTPRequestMethodKey):
			f.method, f.hasMethod = knownMethod(str(a.Value)), true
		case string(semconv.HTTPResponseStatusCodeKey):
			f.statusCode = num(a.Value)
		case string(semconv.HTTPRouteKey):
			f.route = str(a.Value)
		case string(semconv.NetworkProtocolVersionKey):
			f.protocolVersion = str(a.Value)
		case string(semconv.ErrorTypeKey):
			f.errorType = str(a.Value)
		case string(semconv.ServerAddressKey):
			f.serverAddress = str(a.Value)
		case string(semconv.ServerPortKey):
			f.serverPort = num(a.Value)
		case string(semconv.RPCSystemKey):
			f.rpcSystem, f.hasRPCSystem = str(a.Value), true
		case string(semconv.RPCServiceKey):
			f.rpcService = str(a.Value)
		case string(semconv.RPCMethodKey):
			f.rpcMethod = str(a.Value)
		case string(semconv.RPCGRPCStatusCodeKey):
			f.grpcStatusCode = num(a.Value)
		case string(semconv.DBSystemNameKey):
			f.dbSystem, f.hasDBSystem = str(a.Value), true
		case string(semconv.DBOperationNameKey):
			f.dbOperation = str(a.Value)
		case string(semconv.DBNamespaceKey):
			f.dbNamespace = str(a.Value)
		}
	}
	return f
}

// str returns a string attribute value; other types are not expected
// for the keys read as strings and count as absent.
func str(v any) string {
	s, _ := v.(string)
	return s
}

// num returns an integer attribute value, whatever its Go integer type
// (libraries set int64, some record fields are unsigned); -1 when absent
// or not an integer.
func num(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case uint64:
		return int64(n)
	}
	return -1
}

// semconvOther is semconv's value for what the instrumentation cannot
// name: an unknown HTTP method (the raw method comes from the client and
// would let anyone create series at will), an error without a type.
const semconvOther = "_OTHER"

// knownMethod returns m if it is one of the methods of RFC 9110 and
// RFC 5789 (semconv's list), else "_OTHER".
func knownMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return semconvOther
}

// key is one label set of one histogram: strs and nums hold its label
// values in an order each metric defines (see the values functions in
// red.go), nums as numbers, -1 meaning an empty label. It is comparable,
// so it keys the series cache without building strings per span.
type key struct {
	strs [6]string
	nums [2]int64
	// other marks the overflow series of strs[0] (the service): every
	// other label is "_other".
	other bool
}

// overflowValue is the label value of every label but service_name in the
// series that takes the observations past the cardinality limit.
const overflowValue = "_other"

// formatNum formats a numeric label value; -1 is an absent one.
func formatNum(n int64) string {
	if n < 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}
