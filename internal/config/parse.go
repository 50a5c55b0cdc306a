package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/jobgate/jobgate/schemas"
)

// Problem is one thing wrong in a config file.
type Problem struct {
	Path    string // key path, e.g. functions[0].image
	Line    int    // 1-based, 0 when unknown
	Message string
}

// Error lists every problem found in one file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		path := p.Path
		if path == "" {
			path = "(top level)"
		}
		fmt.Fprintf(&b, ": %s: %s", path, p.Message)
	}
	return b.String()
}

// Load reads and parses the file at path, then resolves it against this
// host's environment (Resolve).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f, path)
	if err != nil {
		return nil, err
	}
	if err := Resolve(cfg, path); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse reads a YAML config; name is used in error messages only. It
// reads nothing but r: environment variables and files the config names
// are Resolve's business.
func Parse(r io.Reader, name string) (*Config, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, &Error{File: name, Problems: []Problem{{Message: "not valid YAML: " + err.Error()}}}
	}
	if len(root.Content) == 0 {
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}

	// Schema first: it reports every problem with its key path.
	if probs, err := checkSchema(&root); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	} else if len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}

	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Problems: []Problem{{Message: err.Error()}}}
	}
	if cfg.Redis.Addr == "" && cfg.Redis.URL == "" && cfg.Redis.Sentinel == nil && cfg.Redis.Cluster == nil {
		cfg.Redis.Addr = DefaultRedisAddr
	}
	probs := cfg.decodeTriggers()
	if probs = append(probs, cfg.validate()...); len(probs) > 0 {
		for i := range probs {
			probs[i].Line = lineOf(&root, probs[i].Path)
		}
		return nil, &Error{File: name, Problems: probs}
	}
	return &cfg, nil
}

func checkSchema(root *yaml.Node) ([]Problem, error) {
	var doc any
	if err := root.Decode(&doc); err != nil {
		return []Problem{{Message: err.Error()}}, nil
	}
	if doc == nil {
		doc = map[string]any{}
	}
	// Round-trip through JSON so the validator sees JSON types.
	js, err := json.Marshal(doc)
	if err != nil {
		return []Problem{{Message: "cannot be represented as JSON: " + err.Error()}}, nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, err
	}
	sch, err := schemas.Compile(schemas.Config)
	if err != nil {
		return nil, err
	}
	vs, err := schemas.Validate(sch, inst)
	if err != nil {
		return nil, err
	}
	var probs []Problem
	for _, v := range vs {
		path := pointerToPath(v.Pointer)
		probs = append(probs, Problem{Path: path, Line: lineOf(root, path), Message: v.Message})
	}
	return probs, nil
}

// DefaultRedisAddr is Redis's address when neither addr nor url is set.
const DefaultRedisAddr = "127.0.0.1:6379"

// Complete makes a config built in code what Parse would have made of it:
// it is written as YAML and parsed back (schema, defaults for the keys
// left zero, typed trigger options, checks), then the node name is
// resolved. name is used in errors.
func Complete(c *Config, name string) error {
	raw, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	parsed, err := Parse(bytes.NewReader(raw), name)
	if err != nil {
		return err
	}
	parsed.resolveNode()
	*c = *parsed
	return nil
}

// UnmarshalYAML decodes a function over DefaultFunction, so keys it
// leaves out keep their defaults.
func (f *Function) UnmarshalYAML(n *yaml.Node) error {
	type plain Function // without this method
	p := plain(DefaultFunction())
	if err := n.Decode(&p); err != nil {
		return err
	}
	*f = Function(p)
	return nil
}

// pointerToPath turns /functions/0/image into functions[0].image.
func pointerToPath(ptr string) string {
	var b strings.Builder
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		if _, err := strconv.Atoi(tok); err == nil {
			fmt.Fprintf(&b, "[%s]", tok)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

var pathToken = regexp.MustCompile(`[^.\[\]]+|\[\d+\]`)

// lineOf finds the line of the deepest node on path that exists.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, tok := range pathToken.FindAllString(path, -1) {
		var next *yaml.Node
		if strings.HasPrefix(tok, "[") {
			i, _ := strconv.Atoi(strings.Trim(tok, "[]"))
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == tok {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}
