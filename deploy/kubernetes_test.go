package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// object is one decoded manifest.
type object struct {
	file string
	kind string
	obj  any
}

// newObject returns the typed value a manifest of apiVersion and kind decodes into.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "kustomize.config.k8s.io/v1beta1/Kustomization":
		return &kustomization{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q", apiVersion, kind)
}

// kustomization is the part of kustomize's Kustomization the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// decode reads every document of every manifest strictly: an unknown or misspelt field
// is an error, as the API server's strict field validation would report it.
func decode(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []object
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			obj, err := newObject(head.APIVersion, head.Kind)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, head.Kind, err)
				continue
			}
			objs = append(objs, object{file: filepath.Base(f), kind: head.Kind, obj: obj})
		}
	}
	return objs
}

func find[T any](t *testing.T, objs []object) []*T {
	var out []*T
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		var zero T
		t.Fatalf("no %T in the manifests", zero)
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := decode(t)
	k := find[kustomization](t, objs)[0]
	var files []string
	for _, o := range objs {
		if o.file != "kustomization.yaml" {
			files = append(files, o.file)
		}
	}
	for _, f := range files {
		if !slices.Contains(k.Resources, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	for _, r := range k.Resources {
		if !slices.Contains(files, r) {
			t.Errorf("kustomization.yaml lists %s, which is not a manifest here", r)
		}
	}
}

// TestStrictDecodingCatchesTypos shows the check can fail: a misspelt field in a real
// manifest is reported.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(raw, []byte("readinessProbe:"), []byte("readinesProbe:"), 1)
	if err := yaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "readinesProbe") {
		t.Errorf("a misspelt field decoded without error: %v", err)
	}
}

func TestDeployment(t *testing.T) {
	objs := decode(t)
	d := find[appsv1.Deployment](t, objs)[0]
	spec := d.Spec.Template.Spec
	if d.Spec.Selector == nil || !subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("the selector does not match the pod's labels")
	}
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("container %s has no CPU or memory request", c.Name)
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s may escalate privileges or write its root filesystem", c.Name)
		}
	}
	if !slices.Contains(names, "envoy") || !slices.Contains(names, "keygate") {
		t.Fatalf("containers %v, want envoy and keygate", names)
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("the pod may run as root")
	}
	kg := spec.Containers[slices.Index(names, "keygate")]
	if kg.LivenessProbe == nil || kg.LivenessProbe.HTTPGet == nil || kg.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("keygate's liveness probe is not /healthz")
	}
	if kg.ReadinessProbe == nil || kg.ReadinessProbe.HTTPGet == nil || kg.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("keygate's readiness probe is not /readyz")
	}
	if kg.Resources.Limits.Memory().IsZero() {
		t.Errorf("keygate has no memory limit")
	}
	// Every mount names a volume, every volume names a ConfigMap or Secret that exists.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %s mounts %s, which is not a volume", c.Name, m.Name)
			}
		}
	}
	configMaps, secrets := map[string]bool{}, map[string]bool{}
	for _, cm := range find[corev1.ConfigMap](t, objs) {
		configMaps[cm.Name] = true
	}
	for _, s := range find[corev1.Secret](t, objs) {
		secrets[s.Name] = true
	}
	for _, v := range vols {
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
			t.Errorf("volume %s names ConfigMap %s, which is not in the manifests", v.Name, v.ConfigMap.Name)
		}
		if v.Secret != nil && !secrets[v.Secret.SecretName] {
			t.Errorf("volume %s names Secret %s, which is not in the manifests", v.Name, v.Secret.SecretName)
		}
	}
	for _, pdb := range find[policyv1.PodDisruptionBudget](t, objs) {
		if pdb.Spec.Selector == nil || !subset(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("PodDisruptionBudget %s does not select the Deployment's pods", pdb.Name)
		}
	}
}

// TestNetworkPolicy checks that the pod may reach only Vault, Redis and DNS.
func TestNetworkPolicy(t *testing.T) {
	objs := decode(t)
	d := find[appsv1.Deployment](t, objs)[0]
	np := find[networkingv1.NetworkPolicy](t, objs)[0]
	if !subset(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("the NetworkPolicy does not select the Deployment's pods")
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Fatalf("the NetworkPolicy does not restrict egress")
	}
	var ports []string
	for _, rule := range np.Spec.Egress {
		if len(rule.To) == 0 {
			t.Errorf("an egress rule allows every destination")
		}
		for _, to := range rule.To {
			if to.IPBlock != nil || (to.PodSelector == nil && to.NamespaceSelector == nil) {
				t.Errorf("an egress rule allows a destination outside the cluster's Vault, Redis and DNS")
			}
		}
		if len(rule.Ports) == 0 {
			t.Errorf("an egress rule allows every port")
		}
		for _, p := range rule.Ports {
			ports = append(ports, fmt.Sprint(p.Port.IntValue()))
		}
	}
	slices.Sort(ports)
	if got := strings.Join(slices.Compact(ports), ","); got != "53,6379,8200" {
		t.Errorf("egress ports %s, want only 53 (DNS), 6379 (Redis) and 8200 (Vault)", got)
	}
}

func TestRotationCronJob(t *testing.T) {
	cj := find[batchv1.CronJob](t, decode(t))[0]
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	c := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args[:2], []string{"keys", "rotate-due"}) || !slices.Contains(c.Args, "--deliver") {
		t.Errorf("the CronJob runs %v, want keys rotate-due --deliver …", c.Args)
	}
}

// TestEnvoyConfigMapIsTheShippedConfig keeps the manifest's Envoy bootstrap identical to
// envoy/configs/sidecar.yaml, which the main module validates against go-control-plane.
func TestEnvoyConfigMapIsTheShippedConfig(t *testing.T) {
	want, err := os.ReadFile("../envoy/configs/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range find[corev1.ConfigMap](t, decode(t)) {
		if cm.Name != "envoy" {
			continue
		}
		if cm.Data["envoy.yaml"] != string(want) {
			t.Errorf("deploy/kubernetes/envoy-configmap.yaml's envoy.yaml differs from envoy/configs/sidecar.yaml: copy the file into it (indented by 4)")
		}
		return
	}
	t.Fatal("no envoy ConfigMap")
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
