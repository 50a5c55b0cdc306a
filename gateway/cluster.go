package gateway

import (
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/jobgate/jobgate/internal/keyspace"
	"github.com/jobgate/jobgate/internal/queue"
	"github.com/jobgate/jobgate/internal/record"
	"github.com/jobgate/jobgate/internal/redisconn"
)

// ClusterView is GET /v1/cluster: the queue by state, the workers (their
// node leases) and what runs on each.
type ClusterView struct {
	Queue   map[string]int
	Running int
	Nodes   []NodeView
}

// NodeView is one worker node: its lease (0 when gone) and its running
// invocations.
type NodeView struct {
	Node    string
	LeaseMs int64
	Running int
}

func (g *Gateway) cluster(_ http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	keys := keyspace.New(g.config().Redis.KeyPrefix())
	view := ClusterView{Queue: map[string]int{}, Nodes: []NodeView{}}
	insp := asynq.NewInspectorFromRedisClient(g.d.Redis)
	queues, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	if slices.Contains(queues, queue.Name) {
		info, err := insp.GetQueueInfo(queue.Name)
		if err != nil {
			return nil, err
		}
		view.Queue = map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed}
	}
	nodes := map[string]*NodeView{}
	prefix := keys.Node("")
	if err := redisconn.Scan(ctx, g.d.Redis, prefix+"*", func(key string) error {
		name := strings.TrimPrefix(key, prefix)
		ttl, err := g.d.Redis.PTTL(ctx, key).Result()
		if err != nil {
			return err
		}
		nodes[name] = &NodeView{Node: name, LeaseMs: max(ttl, 0).Milliseconds()}
		return nil
	}); err != nil {
		return nil, err
	}
	ids, err := g.d.Redis.SMembers(ctx, keys.Running()).Result()
	if err != nil {
		return nil, err
	}
	// The set holds SCHEDULING invocations too (on a node, not yet
	// running): counted by their status.
	cmds := make([]*redis.SliceCmd, len(ids))
	if _, err := g.d.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, keys.Record(id), "Node", "Status")
		}
		return nil
	}); err != nil && err != redis.Nil {
		return nil, err
	}
	for _, c := range cmds {
		v := c.Val()
		name, _ := v[0].(string)
		if status, _ := v[1].(string); name == "" || status != string(record.Running) {
			continue
		}
		view.Running++
		if nodes[name] == nil {
			nodes[name] = &NodeView{Node: name} // running there, lease gone: a lost node
		}
		nodes[name].Running++
	}
	for _, n := range nodes {
		view.Nodes = append(view.Nodes, *n)
	}
	sort.Slice(view.Nodes, func(i, j int) bool { return view.Nodes[i].Node < view.Nodes[j].Node })
	return view, nil
}
