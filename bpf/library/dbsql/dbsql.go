// Package dbsql instruments database/sql: each query or exec run through
// a *sql.DB, *sql.Conn, *sql.Tx or prepared *sql.Stmt is a client span
// whose query text has its literals redacted, with the server and
// database its connection goes to where the driver's configuration is
// readable (go-sql-driver/mysql, jackc/pgx/v5 stdlib, lib/pq from v1.11,
// modernc.org/sqlite).
package dbsql

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type query -type server -type done -type dbsql_probe -type dbsql_field -type dbsql_func -type dbsql_driver -type dbsql_query_flag Dbsql dbsql.c -- -I../../include

import (
	"net"
	"strconv"
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
)

// Driver modules whose connections the probes read.
const (
	mysqlModule  = "github.com/go-sql-driver/mysql"
	pgxModule    = "github.com/jackc/pgx/v5"
	pqModule     = "github.com/lib/pq"
	sqliteModule = "modernc.org/sqlite"
)

// Library is database/sql's registry entry.
var Library = &library.Library{
	Name:   "database/sql",
	Module: "std",
	Probes: []library.Probe{
		{Symbol: "database/sql.(*DB).queryDC", Entry: "query_entry", Exit: "query_exit"},
		{Symbol: "database/sql.(*DB).execDC", Entry: "exec_entry", Exit: "exec_exit"},
		// Prepared statements.
		{Symbol: "database/sql.(*Stmt).QueryContext", Entry: "stmt_entry", Exit: "query_exit"},
		{Symbol: "database/sql.(*Stmt).ExecContext", Entry: "stmt_entry", Exit: "exec_exit"},
	},
	Fields: fields(),
	Funcs:  funcs(),
	Linker: linker,
	Deps: []library.Dep{
		// Every release since v1.6.0 (February 2021).
		{Module: mysqlModule, Linker: driverLinker(mysqlModule, "mysql"), Versions: []string{
			"v1.6.0", "v1.7.0", "v1.7.1", "v1.8.0", "v1.8.1", "v1.9.0", "v1.9.1", "v1.9.2", "v1.9.3", "v1.10.0", "v1.10.1",
		}},
		// Every release the module proxy serves (v5.0 - v5.2 are retracted).
		{Module: pgxModule, Linker: driverLinker(pgxModule+"/stdlib", "pgx"), Versions: []string{
			"v5.3.0", "v5.3.1", "v5.4.1", "v5.4.3", "v5.5.0", "v5.5.1", "v5.5.2", "v5.5.3", "v5.5.4", "v5.5.5",
			"v5.6.0", "v5.7.0", "v5.7.1", "v5.7.2", "v5.7.3", "v5.7.4", "v5.7.5", "v5.7.6", "v5.8.0",
			"v5.9.0", "v5.9.1", "v5.9.2", "v5.10.0", "v5.11.0", "v5.12.0", "v5.13.0",
		}},
		// v1.11 keeps the parsed configuration of the host it reached in
		// the connection; v1.10 kept only a map of options.
		{Module: pqModule, Linker: driverLinker(pqModule, "postgres"), Versions: []string{
			"v1.11.0", "v1.11.1", "v1.11.2", "v1.12.0", "v1.12.1", "v1.12.2", "v1.12.3",
		}},
	},
	Spec:   LoadDbsql,
	Decode: decode,
}

func fields() []string {
	const sql = "database/sql."
	byEnum := map[DbsqlDbsqlField]string{
		DbsqlDbsqlFieldF_STMT_QUERY:      sql + "Stmt.query",
		DbsqlDbsqlFieldF_STMT_CGDS:       sql + "Stmt.cgds",
		DbsqlDbsqlFieldF_STMT_CSS:        sql + "Stmt.css",
		DbsqlDbsqlFieldF_CONNSTMT_DC:     sql + "connStmt.dc",
		DbsqlDbsqlFieldF_DS_LOCKER:       sql + "driverStmt.Locker",
		DbsqlDbsqlFieldF_DC_CI:           sql + "driverConn.ci",
		DbsqlDbsqlFieldF_DC_DB:           sql + "driverConn.db",
		DbsqlDbsqlFieldF_DB_CONNECTOR:    sql + "DB.connector",
		DbsqlDbsqlFieldF_DSN_DSN:         sql + "dsnConnector.dsn",
		DbsqlDbsqlFieldF_ITAB_FUN:        "?runtime.itab.fun",
		DbsqlDbsqlFieldF_ABI_ITAB_FUN:    "?internal/abi.ITab.Fun",
		DbsqlDbsqlFieldF_MYSQL_CONN_CFG:  mysqlModule + ".mysqlConn.cfg",
		DbsqlDbsqlFieldF_MYSQL_NET:       mysqlModule + ".Config.Net",
		DbsqlDbsqlFieldF_MYSQL_ADDR:      mysqlModule + ".Config.Addr",
		DbsqlDbsqlFieldF_MYSQL_DBNAME:    mysqlModule + ".Config.DBName",
		DbsqlDbsqlFieldF_PGX_CONN_CONFIG: pgxModule + "/stdlib.Conn.connConfig",
		DbsqlDbsqlFieldF_PGX_CONFIG:      pgxModule + ".ConnConfig.Config",
		DbsqlDbsqlFieldF_PGCONN_HOST:     pgxModule + "/pgconn.Config.Host",
		DbsqlDbsqlFieldF_PGCONN_PORT:     pgxModule + "/pgconn.Config.Port",
		DbsqlDbsqlFieldF_PGCONN_DATABASE: pgxModule + "/pgconn.Config.Database",
		DbsqlDbsqlFieldF_PQ_CONN_CFG:     pqModule + ".conn.cfg",
		DbsqlDbsqlFieldF_PQ_HOST:         pqModule + ".Config.Host",
		DbsqlDbsqlFieldF_PQ_PORT:         pqModule + ".Config.Port",
		DbsqlDbsqlFieldF_PQ_DATABASE:     pqModule + ".Config.Database",
	}
	return library.FieldNames(byEnum, DbsqlDbsqlFieldF_FIELD_MAX)
}

// funcs name the first method of each driver's connection in driver.Conn's
// itab (Begin: methods are sorted by name) and of sql.Open's connector in
// driver.Connector's (Connect, on the pointer wrapper of a value type).
func funcs() []string {
	byEnum := map[DbsqlDbsqlFunc]string{
		DbsqlDbsqlFuncFN_MYSQL_BEGIN:  mysqlModule + ".(*mysqlConn).Begin",
		DbsqlDbsqlFuncFN_PGX_BEGIN:    pgxModule + "/stdlib.(*Conn).Begin",
		DbsqlDbsqlFuncFN_PQ_BEGIN:     pqModule + ".(*conn).Begin",
		DbsqlDbsqlFuncFN_SQLITE_BEGIN: sqliteModule + ".(*conn).Begin",
		DbsqlDbsqlFuncFN_DSN_CONNECT:  "database/sql.(*dsnConnector).Connect",
	}
	return library.FieldNames(byEnum, DbsqlDbsqlFuncFN_MAX)
}

const linker = `package main

import (
	"database/sql"
	"os"
)

func main() {
	if len(os.Args) > 99 { // never: only links prepared statements
		db, _ := sql.Open(os.Args[1], os.Args[2])
		st, _ := db.Prepare(os.Args[3])
		st.Exec()
		st.Query()
	}
}
`

// driverLinker is a program linking the driver package pkg registers as
// name, its connections and their configuration.
func driverLinker(pkg, name string) string {
	return `package main

import (
	"database/sql"
	"os"

	_ "` + pkg + `"
)

func main() {
	if len(os.Args) > 99 { // never: only links the driver's connections
		db, _ := sql.Open("` + name + `", os.Args[1])
		db.Exec(os.Args[2])
	}
}
`
}

// drivers maps driver modules to db.system.name values: the system of a
// call whose connection's driver was not recognized.
var drivers = map[string]string{
	sqliteModule:                          "sqlite",
	"github.com/mattn/go-sqlite3":         "sqlite",
	pqModule:                              "postgresql",
	"github.com/jackc/pgx/v4":             "postgresql",
	pgxModule:                             "postgresql",
	mysqlModule:                           "mysql",
	"github.com/microsoft/go-mssqldb":     "microsoft.sql_server",
	"github.com/denisenkom/go-mssqldb":    "microsoft.sql_server",
	"github.com/ClickHouse/clickhouse-go": "clickhouse",
}

// systems are the db.system.name values of the recognized drivers.
var systems = [DbsqlDbsqlDriverD_MAX]string{
	DbsqlDbsqlDriverD_MYSQL:  "mysql",
	DbsqlDbsqlDriverD_PGX:    "postgresql",
	DbsqlDbsqlDriverD_PQ:     "postgresql",
	DbsqlDbsqlDriverD_SQLITE: "sqlite",
}

func decode(probe uint16, raw []byte, s *span.Span) {
	switch DbsqlDbsqlProbe(probe) {
	case DbsqlDbsqlProbeP_QUERY:
		r := library.Record[DbsqlQuery](raw)
		if r == nil {
			return
		}
		s.Kind = span.KindClient
		if r.Flags&uint32(DbsqlDbsqlQueryFlagQ_SERVER) != 0 {
			s.Attrs = appendServer(s.Attrs, &r.Srv, s.Process)
		}
		if r.Flags&uint32(DbsqlDbsqlQueryFlagQ_TEXT) == 0 {
			return
		}
		text := string(r.Text[:min(int(r.Len), len(r.Text))])
		op := operation(text)
		s.Name = op
		if op == "" {
			s.Name = "query"
		}
		q := Redact(text)
		if uint64(len(text)) < r.Len {
			q += "…"
		}
		if !hasAttr(s.Attrs, string(semconv.DBSystemNameKey)) {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBSystemNameKey), Value: system(s.Process)})
		}
		s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBQueryTextKey), Value: q})
		if op != "" {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBOperationNameKey), Value: op})
		}
	case DbsqlDbsqlProbeP_DONE:
		if r := library.Record[DbsqlDone](raw); r != nil && r.Err != 0 {
			s.Status, s.StatusMessage = span.StatusError, "database call returned an error"
		}
	}
}

// appendServer adds db.system.name (the driver's, else the binary's) and
// what srv says of the connection: server.address and server.port, and
// db.namespace (the database; SQLite: its file).
func appendServer(attrs []span.Attr, srv *DbsqlServer, p *span.Process) []span.Attr {
	d := DbsqlDbsqlDriver(srv.Driver)
	sys := system(p)
	if d < DbsqlDbsqlDriverD_MAX && systems[d] != "" {
		sys = systems[d]
	}
	attrs = append(attrs, span.Attr{Key: string(semconv.DBSystemNameKey), Value: sys})
	host, port := "", 0
	addr, addrWhole := text(srv.Addr[:], srv.AddrLen)
	switch d {
	case DbsqlDbsqlDriverD_MYSQL:
		// Config.Addr is host:port for TCP, the socket's path for "unix";
		// Net may also name a dialer the program registered.
		if library.CString(srv.Net[:]) == "unix" {
			host = addr
		} else if h, p, err := net.SplitHostPort(addr); err == nil {
			host = h
			port, _ = strconv.Atoi(p)
		} else {
			host = addr
		}
	case DbsqlDbsqlDriverD_PGX, DbsqlDbsqlDriverD_PQ:
		host, port = addr, int(srv.Port)
		if strings.HasPrefix(addr, "/") {
			// A Unix socket's directory: the socket is named by the port.
			host, port = addr+"/.s.PGSQL."+strconv.Itoa(port), 0
		}
	}
	if host != "" && addrWhole { // a truncated host would name another
		attrs = append(attrs, span.Attr{Key: string(semconv.ServerAddressKey), Value: host})
		if port > 0 {
			attrs = append(attrs, span.Attr{Key: string(semconv.ServerPortKey), Value: int64(port)})
		}
	}
	ns, nsWhole := text(srv.Ns[:], srv.NsLen)
	if d == DbsqlDbsqlDriverD_SQLITE {
		// sql.Open's name: a path, or a "file:" URI whose parameters
		// are the driver's and SQLite's options, not the database.
		ns = strings.TrimPrefix(ns, "file:")
		if i := strings.IndexByte(ns, '?'); i >= 0 {
			ns, nsWhole = ns[:i], true
		}
	}
	if ns != "" {
		if !nsWhole {
			ns += "…"
		}
		attrs = append(attrs, span.Attr{Key: string(semconv.DBNamespaceKey), Value: ns})
	}
	return attrs
}

// text returns the string read into buf, of full length n, and whether it
// is whole (not truncated).
func text(buf []byte, n uint64) (string, bool) {
	return string(buf[:min(n, uint64(len(buf)))]), n <= uint64(len(buf))
}

func hasAttr(attrs []span.Attr, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// system names the database from the driver module the binary links.
func system(p *span.Process) string {
	if p != nil {
		for mod := range p.Modules {
			if sys, ok := drivers[mod]; ok {
				return sys
			}
		}
	}
	return "other_sql"
}

// operation is the statement's first keyword, upper-cased.
func operation(q string) string {
	q = strings.TrimSpace(q)
	end := strings.IndexFunc(q, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') })
	if end < 0 {
		end = len(q)
	}
	return strings.ToUpper(q[:end])
}

// Redact replaces the literals of a SQL statement (quoted strings,
// numbers) with '?', keeping identifiers, keywords, placeholders and
// quoted identifiers ("name", `name`).
func Redact(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			// A string literal; '' is an escaped quote inside it.
			j := i + 1
			for j < len(q) {
				if q[j] == '\'' {
					if j+1 < len(q) && q[j+1] == '\'' {
						j += 2
						continue
					}
					j++
					break
				}
				j++
			}
			b.WriteByte('?')
			i = j
		case c == '"' || c == '`':
			end := len(q)
			if j := strings.IndexByte(q[i+1:], c); j >= 0 {
				end = i + 1 + j + 1
			}
			b.WriteString(q[i:end])
			i = end
		case c >= '0' && c <= '9' && (i == 0 || !isIdent(q[i-1])):
			j := i
			for j < len(q) && (isIdent(q[j]) || q[j] == '.') {
				j++
			}
			b.WriteByte('?')
			i = j
		case isIdent(c) || c == '$' || c == ':' || c == '@':
			// Identifiers, keywords and placeholders ($1, :name, @p1) stay.
			j := i + 1
			for j < len(q) && isIdent(q[j]) {
				j++
			}
			b.WriteString(q[i:j])
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
