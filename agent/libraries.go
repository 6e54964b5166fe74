package agent

import (
	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/bpf/library/dbsql"
	"github.com/latscope/latscope/bpf/library/goredis"
	grpclib "github.com/latscope/latscope/bpf/library/grpc"
	"github.com/latscope/latscope/bpf/library/hertz"
	"github.com/latscope/latscope/bpf/library/nethttp"
)

// Libraries are the instrumented libraries, in library-id order (the id
// is the index). Adding one is one line here.
var Libraries = []*library.Library{
	nethttp.Library,
	dbsql.Library,
	grpclib.Library,
	goredis.Library,
	hertz.Library,
}
