// Command pushimage packs one static binary into a linux/amd64 image and
// pushes it (used by deploy/up.sh for the sample job; no Docker needed).
//
//	go run ./deploy/pushimage --binary bin/hello --path /hello --ref 127.0.0.1:5000/demo/hello:1
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/jobgate/jobgate/internal/imagebuild"
)

func main() {
	bin := flag.String("binary", "", "static binary to pack")
	path := flag.String("path", "/job", "its path in the image (the ENTRYPOINT)")
	ref := flag.String("ref", "", "image reference to push")
	env := flag.String("env", "PATH=/", "comma-separated KEY=value image env")
	flag.Parse()
	if *bin == "" || *ref == "" {
		fmt.Fprintln(os.Stderr, "usage: pushimage --binary FILE --ref REF [--path /job] [--env K=V,...]")
		os.Exit(2)
	}
	if err := run(*bin, *path, *ref, *env); err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
}

func run(bin, path, ref, env string) error {
	content, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	img, err := imagebuild.Build(imagebuild.Spec{
		Files:      map[string]imagebuild.File{strings.TrimPrefix(path, "/"): {Content: content, Mode: 0o755}},
		Entrypoint: []string{path},
		Env:        strings.Split(env, ","),
	})
	if err != nil {
		return err
	}
	digest, err := imagebuild.Push(ref, img)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s@%s\n", ref, digest)
	return nil
}
