package bench

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/jobgate/jobgate/internal/testkit/testenv"
	"github.com/jobgate/jobgate/internal/testkit/testjob"
)

// BenchmarkCreateStages times containerd's create stages (container,
// task, start; median of 15) for variants of the spec and IO, to show
// where a job's start time goes: seccomp, the log driver, a shared shim.
// It informs; it has no target.
func BenchmarkCreateStages(b *testing.B) {
	s := testenv.Shared(b)
	ref := s.Registry + "/bench/job:1"
	if _, err := testjob.Push(ref); err != nil {
		b.Fatal(err)
	}
	client, err := containerd.New(s.Containerd)
	if err != nil {
		b.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), s.Namespace(b))
	img, err := client.Pull(ctx, ref, containerd.WithPullUnpack)
	if err != nil {
		b.Fatal(err)
	}
	variants := map[string]func(id string) (cio.Creator, []oci.SpecOpts){
		"group": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.NullIO, []oci.SpecOpts{oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": "g1"})}
		},
		"seccomp-x86_64": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.NullIO, []oci.SpecOpts{seccomp.WithDefaultProfile(), func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
				sp.Linux.Seccomp.Architectures = []specs.Arch{specs.ArchX86_64}
				return nil
			}}
		},
		"null": func(string) (cio.Creator, []oci.SpecOpts) { return cio.NullIO, nil },
		"seccomp": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.NullIO, []oci.SpecOpts{seccomp.WithDefaultProfile()}
		},
		"mem": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.NullIO, []oci.SpecOpts{oci.WithMemoryLimit(128 << 20), oci.WithPidsLimit(1024)}
		},
		"logger-small": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.BinaryIO(s.LoggerBin, map[string]string{"_jobgate_logger": "/nonexistent"}), nil
		},
		"logger-big": func(string) (cio.Creator, []oci.SpecOpts) {
			return cio.BinaryIO(s.JobgateBin, map[string]string{"_jobgate_logger": "/nonexistent"}), nil
		},
	}
	// anchor keeps a grouped shim alive
	anchor, err := client.NewContainer(ctx, "anchor", containerd.WithImage(img), containerd.WithNewSnapshot("anchor", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("/bin/job", "sleep", "600"), oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": "g1"})),
		containerd.WithContainerLabels(map[string]string{"io.containerd.runc.v2.group": "g1"}))
	if err != nil {
		b.Fatal(err)
	}
	at, err := anchor.NewTask(ctx, cio.NullIO)
	if err != nil {
		b.Fatal(err)
	}
	at.Start(ctx)
	defer func() { at.Delete(ctx, containerd.WithProcessKill); anchor.Delete(ctx, containerd.WithSnapshotCleanup) }()
	names := make([]string, 0, len(variants))
	for k := range variants {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v := variants[name]
		var cr, tk, st []time.Duration
		for i := 0; i < scale(15, 1); i++ {
			id := fmt.Sprintf("d-%s-%d", name, i)
			io, opts := v(id)
			t0 := time.Now()
			ctr, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
				containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs("/bin/job", "exit", "0")}, opts...)...), containerd.WithContainerLabels(labels(name)))
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			task, err := ctr.NewTask(ctx, io)
			if err != nil {
				b.Fatal(name, err)
			}
			t2 := time.Now()
			exitC, _ := task.Wait(ctx)
			if err := task.Start(ctx); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			cr, tk, st = append(cr, t1.Sub(t0)), append(tk, t2.Sub(t1)), append(st, t3.Sub(t2))
			<-exitC
			task.Delete(ctx)
			ctr.Delete(ctx, containerd.WithSnapshotCleanup)
		}
		fmt.Printf("STAGE|%s|%s|%s|%s\n", name, ms(median(cr)), ms(median(tk)), ms(median(st)))
	}
}

func labels(name string) map[string]string {
	if name == "group" {
		return map[string]string{"io.containerd.runc.v2.group": "g1"}
	}
	return nil
}
