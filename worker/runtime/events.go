package runtime

import (
	"context"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
)

// SubscribeOOM sends the id of every container in the namespace whose
// process the kernel OOM-killed (containerd's /tasks/oom events; a child
// can be killed while PID 1 exits 0, so the exit code cannot tell). The
// channel closes when ctx ends or the stream breaks.
func (r *Runtime) SubscribeOOM(ctx context.Context) <-chan string {
	ctx = r.ctx(ctx)
	out := make(chan string, 64)
	envs, errs := r.client.Subscribe(ctx, `topic=="/tasks/oom",namespace==`+`"`+r.opts.Namespace+`"`)
	go func() {
		defer close(out)
		for {
			select {
			case e := <-envs:
				v, err := typeurl.UnmarshalAny(e.Event)
				if err != nil {
					continue
				}
				if oom, ok := v.(*apievents.TaskOOM); ok {
					select {
					case out <- oom.ContainerID:
					case <-ctx.Done():
						return
					}
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
