// Package schemas holds jobgate's JSON Schemas (embedded) and compiles them.
//
// The schemas are part of the public contract: config files and trigger
// events are validated against them, and tools outside jobgate may use the
// .json files directly.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed *.schema.json
var files embed.FS

// Config is the file name of the configuration schema.
const Config = "config.schema.json"

// Compile loads and compiles the named embedded schema.
func Compile(name string) (*jsonschema.Schema, error) {
	raw, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(name, doc); err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	sch, err := c.Compile(name)
	if err != nil {
		return nil, fmt.Errorf("compile schema %s: %w", name, err)
	}
	return sch, nil
}

// Violation is one schema error: where in the instance, and what is wrong.
type Violation struct {
	Pointer string // JSON pointer into the instance, "" for the root
	Message string
}

// Validate checks a JSON-decoded instance (as produced by
// jsonschema.UnmarshalJSON) and returns every leaf violation, sorted by
// location.
func Validate(sch *jsonschema.Schema, instance any) ([]Violation, error) {
	err := sch.Validate(instance)
	if err == nil {
		return nil, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, err
	}
	printer := message.NewPrinter(language.English)
	var out []Violation
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			// Name each unknown key at its own location.
			if ap, ok := e.ErrorKind.(*kind.AdditionalProperties); ok {
				for _, p := range ap.Properties {
					out = append(out, Violation{
						Pointer: "/" + strings.Join(append(append([]string{}, e.InstanceLocation...), p), "/"),
						Message: "unknown key (not allowed here)",
					})
				}
				return
			}
			out = append(out, Violation{
				Pointer: "/" + strings.Join(e.InstanceLocation, "/"),
				Message: e.ErrorKind.LocalizedString(printer),
			})
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pointer < out[j].Pointer })
	return out, nil
}
