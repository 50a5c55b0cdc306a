package kubernetes_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/jobgate/jobgate/internal/config"
)

// The manifests decode strictly into k8s.io/api types (a misspelt or
// misplaced key fails), and they hold what running jobgate needs: a valid
// config, the log driver installed on the host where logger_binary says,
// a required token secret, probes, resources and a drain period.
func TestManifests(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("jobgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]any{}
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch meta.Kind {
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Service":
			obj = &corev1.Service{}
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		default:
			t.Fatalf("unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
		key := meta.Kind
		if _, dup := objs[key]; dup {
			key += "-2"
		}
		objs[key] = obj
	}
	cm := objs["ConfigMap"].(*corev1.ConfigMap)
	cfg, err := config.Parse(strings.NewReader(cm.Data["jobgate.yaml"]), "configmap jobgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gw := objs["Deployment"].(*appsv1.Deployment).Spec.Template.Spec
	ds := objs["DaemonSet"].(*appsv1.DaemonSet).Spec.Template.Spec
	for name, pod := range map[string]corev1.PodSpec{"gateway": gw, "worker": ds} {
		c := pod.Containers[0]
		if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() ||
			pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 30 {
			t.Errorf("%s: probes, resources and a drain period are required: %+v", name, c)
		}
	}
	if e := gw.Containers[0].EnvFrom; len(e) != 1 || e[0].SecretRef == nil || e[0].SecretRef.Name != "jobgate-env" || (e[0].SecretRef.Optional != nil && *e[0].SecretRef.Optional) {
		t.Errorf("the gateway's token secret must be required: %+v", e)
	}
	if p := gw.Containers[0].ReadinessProbe.HTTPGet; p == nil || p.Path != "/readyz" {
		t.Errorf("gateway readiness: %+v", p)
	}
	// The log driver: installed by the initContainer into a hostPath
	// mounted where worker.logger_binary points.
	if len(ds.InitContainers) != 1 || ds.InitContainers[0].Args[0] != "install-logger" {
		t.Fatalf("worker initContainers: %+v", ds.InitContainers)
	}
	dir := ds.InitContainers[0].Args[1]
	if cfg.Worker.LoggerBinary != dir+"/jobgate-logger" {
		t.Errorf("logger_binary %q is not where install-logger puts it (%s)", cfg.Worker.LoggerBinary, dir)
	}
	hostPaths := map[string]string{}
	for _, v := range ds.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	onHost := func(mounts []corev1.VolumeMount, path string) bool {
		for _, m := range mounts {
			if hp, ok := hostPaths[m.Name]; ok && m.MountPath == hp && strings.HasPrefix(path, m.MountPath+"/") {
				return true
			}
		}
		return false
	}
	if !onHost(ds.InitContainers[0].VolumeMounts, dir+"/x") || !onHost(ds.Containers[0].VolumeMounts, cfg.Worker.LoggerBinary) {
		t.Errorf("%s is not a host path at the same place in both containers", dir)
	}
	if cfg.Worker.Listen == "" || ds.Containers[0].ReadinessProbe.HTTPGet == nil {
		t.Errorf("the worker serves no probes/metrics (worker.listen %q)", cfg.Worker.Listen)
	}
	redis := objs["StatefulSet"].(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0]
	if args := strings.Join(redis.Args, " "); !strings.Contains(args, "--appendonly yes") || !strings.Contains(args, "noeviction") {
		t.Errorf("redis args %q", args)
	}
}
