// Package dbsql instruments database/sql: each query or exec run through
// a *sql.DB, *sql.Conn, *sql.Tx or prepared *sql.Stmt is a client span
// whose query text has its literals redacted.
package dbsql

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type query -type done -type dbsql_probe -type dbsql_field Dbsql dbsql.c -- -I../../include

import (
	"strings"

	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/span"
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
	Fields: []string{DbsqlDbsqlFieldF_STMT_QUERY: "database/sql.Stmt.query"},
	Linker: linker,
	Spec:   LoadDbsql,
	Decode: decode,
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

// drivers maps driver modules to db.system.name values.
var drivers = map[string]string{
	"modernc.org/sqlite":                  "sqlite",
	"github.com/mattn/go-sqlite3":         "sqlite",
	"github.com/lib/pq":                   "postgresql",
	"github.com/jackc/pgx/v4":             "postgresql",
	"github.com/jackc/pgx/v5":             "postgresql",
	"github.com/go-sql-driver/mysql":      "mysql",
	"github.com/microsoft/go-mssqldb":     "microsoft.sql_server",
	"github.com/denisenkom/go-mssqldb":    "microsoft.sql_server",
	"github.com/ClickHouse/clickhouse-go": "clickhouse",
}

func decode(probe uint16, raw []byte, s *span.Span) {
	switch DbsqlDbsqlProbe(probe) {
	case DbsqlDbsqlProbeP_QUERY:
		r := library.Record[DbsqlQuery](raw)
		if r == nil {
			return
		}
		text := string(r.Text[:min(int(r.Len), len(r.Text))])
		op := operation(text)
		s.Kind = span.KindClient
		s.Name = op
		if op == "" {
			s.Name = "query"
		}
		q := Redact(text)
		if uint64(len(text)) < r.Len {
			q += "…"
		}
		s.Attrs = append(s.Attrs,
			span.Attr{Key: string(semconv.DBSystemNameKey), Value: system(s.Process)},
			span.Attr{Key: string(semconv.DBQueryTextKey), Value: q},
		)
		if op != "" {
			s.Attrs = append(s.Attrs, span.Attr{Key: string(semconv.DBOperationNameKey), Value: op})
		}
	case DbsqlDbsqlProbeP_DONE:
		if r := library.Record[DbsqlDone](raw); r != nil && r.Err != 0 {
			s.Status, s.StatusMessage = span.StatusError, "database call returned an error"
		}
	}
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
