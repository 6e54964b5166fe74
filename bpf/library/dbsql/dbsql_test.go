package dbsql

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/latscope/latscope/span"
)

// bytesOf is r's memory, as the ring buffer delivers it.
func bytesOf[T any](r *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
}

// server is a record's server part as the probes fill it; addrLen and
// nsLen 0 mean the strings' own lengths.
func server(d DbsqlDbsqlDriver, network, addr string, port uint16, ns string, addrLen, nsLen uint64) DbsqlServer {
	var s DbsqlServer
	s.Driver = uint8(d)
	copy(s.Net[:], network)
	s.AddrLen = uint64(copy(s.Addr[:], addr))
	s.NsLen = uint64(copy(s.Ns[:], ns))
	if addrLen != 0 {
		s.AddrLen = addrLen
	}
	if nsLen != 0 {
		s.NsLen = nsLen
	}
	s.Port = port
	return s
}

func TestDecodeServer(t *testing.T) {
	long := strings.Repeat("h", len(DbsqlServer{}.Addr))
	for _, tt := range []struct {
		name string
		srv  DbsqlServer
		want string
	}{
		{"mysql tcp", server(DbsqlDbsqlDriverD_MYSQL, "tcp", "127.0.0.1:3306", 0, "shop", 0, 0),
			"db.system.name=mysql server.address=127.0.0.1 server.port=3306 db.namespace=shop"},
		{"mysql tcp6", server(DbsqlDbsqlDriverD_MYSQL, "tcp6", "[::1]:3307", 0, "", 0, 0),
			"db.system.name=mysql server.address=::1 server.port=3307"},
		{"mysql socket", server(DbsqlDbsqlDriverD_MYSQL, "unix", "/run/mysqld/mysqld.sock", 0, "stock", 0, 0),
			"db.system.name=mysql server.address=/run/mysqld/mysqld.sock db.namespace=stock"},
		// A dialer the program registered (mysql.RegisterDialContext).
		{"mysql custom dialer", server(DbsqlDbsqlDriverD_MYSQL, "cloudsql", "project:region:instance", 0, "db", 0, 0),
			"db.system.name=mysql server.address=project:region:instance db.namespace=db"},
		{"pgx tcp", server(DbsqlDbsqlDriverD_PGX, "", "db.example.com", 5433, "shop", 0, 0),
			"db.system.name=postgresql server.address=db.example.com server.port=5433 db.namespace=shop"},
		{"pq socket", server(DbsqlDbsqlDriverD_PQ, "", "/var/run/postgresql", 5432, "stock", 0, 0),
			"db.system.name=postgresql server.address=/var/run/postgresql/.s.PGSQL.5432 db.namespace=stock"},
		// A truncated host would name another: left out.
		{"host truncated", server(DbsqlDbsqlDriverD_PGX, "", long, 5432, "shop", 300, 0),
			"db.system.name=postgresql db.namespace=shop"},
		{"sqlite path", server(DbsqlDbsqlDriverD_SQLITE, "", "", 0, "/var/lib/app/shop.db", 0, 0),
			"db.system.name=sqlite db.namespace=/var/lib/app/shop.db"},
		{"sqlite uri", server(DbsqlDbsqlDriverD_SQLITE, "", "", 0, "file:/data/x.db?_pragma=key('secret')&mode=ro", 0, 0),
			"db.system.name=sqlite db.namespace=/data/x.db"},
		{"sqlite memory", server(DbsqlDbsqlDriverD_SQLITE, "", "", 0, ":memory:", 0, 0),
			"db.system.name=sqlite db.namespace=:memory:"},
		// Cut by the record, its parameters after the cut or not.
		{"sqlite truncated", server(DbsqlDbsqlDriverD_SQLITE, "", "", 0, "/"+strings.Repeat("d", 127), 0, 200),
			"db.system.name=sqlite db.namespace=/" + strings.Repeat("d", 127) + "…"},
		{"sqlite truncated parameters", server(DbsqlDbsqlDriverD_SQLITE, "", "", 0, "file:/x.db?"+strings.Repeat("p", 117), 0, 200),
			"db.system.name=sqlite db.namespace=/x.db"},
		// A driver the probes do not read: the system from the binary's modules.
		{"unknown", server(DbsqlDbsqlDriverD_UNKNOWN, "", "", 0, "", 0, 0),
			"db.system.name=postgresql"},
	} {
		r := DbsqlQuery{Flags: uint32(DbsqlDbsqlQueryFlagQ_SERVER), Srv: tt.srv}
		s := span.Span{Process: &span.Process{Modules: map[string]string{"github.com/lib/pq": "v1.10.9"}}}
		decode(uint16(DbsqlDbsqlProbeP_QUERY), bytesOf(&r), &s)
		if got := strings.Join(attrs(&s), " "); got != tt.want || s.Kind != span.KindClient {
			t.Errorf("%s: got %s (kind %v), want %s", tt.name, got, s.Kind, tt.want)
		}
	}
}

// The text the entry could not read comes in a second record, from the
// exit: the span gets its name and text then, the system once.
func TestDecodeLateText(t *testing.T) {
	entry := DbsqlQuery{Flags: uint32(DbsqlDbsqlQueryFlagQ_SERVER), Srv: server(DbsqlDbsqlDriverD_MYSQL, "tcp", "10.0.0.1:3306", 0, "shop", 0, 0)}
	q := "SELECT name FROM items WHERE id = 7"
	exit := DbsqlQuery{Flags: uint32(DbsqlDbsqlQueryFlagQ_TEXT), Len: uint64(len(q))}
	copy(exit.Text[:], q)
	var s span.Span
	decode(uint16(DbsqlDbsqlProbeP_QUERY), bytesOf(&entry), &s)
	decode(uint16(DbsqlDbsqlProbeP_QUERY), bytesOf(&exit), &s)
	want := "SELECT [db.system.name=mysql server.address=10.0.0.1 server.port=3306 db.namespace=shop db.query.text=SELECT name FROM items WHERE id = ? db.operation.name=SELECT]"
	if got := s.Name + " " + fmt.Sprint(attrs(&s)); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// Text alone (no lib_offsets for the process): the system from the modules.
	var t2 span.Span
	t2.Process = &span.Process{Modules: map[string]string{"modernc.org/sqlite": "v1.36.1"}}
	decode(uint16(DbsqlDbsqlProbeP_QUERY), bytesOf(&exit), &t2)
	if got := fmt.Sprint(attrs(&t2)); !strings.HasPrefix(got, "[db.system.name=sqlite db.query.text=") {
		t.Errorf("text alone: %s", got)
	}
}

func TestFieldsComplete(t *testing.T) {
	for i, f := range Library.Fields {
		if f == "" {
			t.Errorf("field %d has no name", i)
		}
	}
	for i, f := range Library.Funcs {
		if f == "" {
			t.Errorf("func %d has no name", i)
		}
	}
	// Each driver's fields are its module's: tabled by its versions.
	for _, f := range Library.Fields {
		if strings.Contains(f, "mysql") && Library.ModuleOf(f) != mysqlModule ||
			strings.Contains(f, "pgx") && Library.ModuleOf(f) != pgxModule ||
			strings.Contains(f, "lib/pq") && Library.ModuleOf(f) != pqModule ||
			strings.HasPrefix(f, "database/sql.") && Library.ModuleOf(f) != "std" {
			t.Errorf("%s: module %s", f, Library.ModuleOf(f))
		}
	}
}

func attrs(s *span.Span) []string {
	out := []string{}
	for _, a := range s.Attrs {
		out = append(out, fmt.Sprintf("%s=%v", a.Key, a.Value))
	}
	return out
}
