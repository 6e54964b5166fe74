package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path over Default and validates the result.
// Decoding is strict: an unknown field, a value of the wrong type, a
// duration without a unit and a key given twice are errors. Every error
// is a *FieldError (joined when there are several) naming the file, line
// and field path: `agent.yaml:7: selectors[1].exe: bad glob "["…`.
func Load(path string) (*Config, error) {
	c, pos, err := load(path)
	if err != nil {
		return nil, err
	}
	if errs := c.problems(); len(errs) > 0 {
		pos.annotate(path, errs)
		return nil, join(errs)
	}
	return c, nil
}

// positions maps the YAML paths a file sets to their lines.
type positions map[string]int

// annotate puts the file and, when the file sets the field, its line on
// errs.
func (p positions) annotate(file string, errs []*FieldError) {
	for _, e := range errs {
		e.File = file
		if e.Line == 0 {
			e.Line = p[e.Path]
		}
	}
}

// load decodes the file over Default without validating the values.
func load(path string) (*Config, positions, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	c := Default()
	pos := positions{}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return c, pos, nil // empty file: defaults
	}
	w := walker{pos: pos}
	w.walk(doc.Content[0], reflect.TypeFor[Config](), "")
	if len(w.errs) > 0 {
		pos.annotate(path, w.errs)
		return nil, nil, join(w.errs)
	}
	// The walk has checked every field; the strict decode is the one
	// that fills c.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, pos, nil
}

// walker checks a YAML tree against a Go type before decoding, so errors
// can name the field's full path and line, which yaml's own do not.
type walker struct {
	pos  positions
	errs []*FieldError
}

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{Line: n.Line, Path: path, Err: fmt.Errorf(format, args...)})
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		w.pos[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // unset: the default stays
	}
	ptr := reflect.PointerTo(t)
	switch {
	case ptr.Implements(unmarshalerType) || ptr.Implements(textType) || t.Kind() != reflect.Struct && t.Kind() != reflect.Slice:
		w.leaf(n, t, path)
	case t.Kind() == reflect.Struct:
		fields, names := yamlFields(t)
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "want a mapping with the fields %s, not a %s", strings.Join(names, ", "), kindName(n.Kind))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if first, dup := seen[k.Value]; dup {
				w.fail(k, p, "given twice (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			ft, ok := fields[k.Value]
			if !ok {
				w.fail(k, p, "unknown field (known: %s)", strings.Join(names, ", "))
				continue
			}
			w.walk(v, ft, p)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "want a list, not a %s", kindName(n.Kind))
			return
		}
		for i, item := range n.Content {
			w.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

// leaf checks a single value by decoding it alone.
func (w *walker) leaf(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		w.fail(n, path, "want a single value, not a %s", kindName(n.Kind))
		return
	}
	if t == durationType {
		if n.Tag == "!!int" || n.Tag == "!!float" {
			w.fail(n, path, "%s has no unit: add one, e.g. %q or %q", n.Value, n.Value+"s", n.Value+"ms")
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			w.fail(n, path, "%q is not a duration (e.g. 250ms, 10s, 1m30s)", n.Value)
		}
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		switch t.Kind() {
		case reflect.Bool:
			w.fail(n, path, "%q is not a boolean (true or false)", n.Value)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
				w.fail(n, path, "%v", err) // its own message
			} else {
				w.fail(n, path, "%q is not an integer", n.Value)
			}
		default:
			w.fail(n, path, "%v", err)
		}
	}
}

// yamlFields returns t's YAML keys with their types, and the keys in
// field order.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	return fields, names
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}
