package pods

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// ownerTimeout bounds one GET of a pod's owner.
const ownerTimeout = 5 * time.Second

// failedOwnerTTL is how long a failed owner lookup is remembered before
// another pod of the same owner tries again: a missing RBAC rule must
// not cost a GET per pod update.
const failedOwnerTTL = time.Minute

// owners resolves a pod's controller chain: the pod's own controller
// reference names its ReplicaSet, StatefulSet, DaemonSet or Job; one GET
// of the ReplicaSet (Job) names its Deployment (CronJob). Answers are
// cached by the ReplicaSet's (Job's) UID for as long as a pod of the
// node refers to it (see retain), so a Deployment's replicas cost one
// GET. Only get on apps/replicasets and batch/jobs is needed: no list,
// no watch, nothing cluster-wide.
type owners struct {
	client kubernetes.Interface
	log    *slog.Logger

	mu     sync.Mutex
	cache  map[types.UID]ownerAnswer
	warned map[string]bool // resource → a failure was logged

	lookups, failures atomic.Uint64
}

// ownerAnswer is the controller of a ReplicaSet or Job: its name, "" if
// it has none (a bare ReplicaSet or Job) or the lookup failed.
type ownerAnswer struct {
	name    string
	expires time.Time // zero: until retain drops it; set for failures
}

func newOwners(client kubernetes.Interface, log *slog.Logger) *owners {
	return &owners{client: client, log: log, cache: map[types.UID]ownerAnswer{}, warned: map[string]bool{}}
}

// workload returns pod's controller chain. Failures to read an owner are
// logged once per resource and leave the outer controller's name empty,
// except for a Deployment: a ReplicaSet named "<deployment>-<the pod's
// pod-template-hash label>" names it.
func (o *owners) workload(pod *corev1.Pod) Workload {
	var w Workload
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return w
	}
	group, _, _ := strings.Cut(ref.APIVersion, "/")
	switch {
	case group == "apps" && ref.Kind == KindReplicaSet:
		w.ReplicaSet = ref.Name
		name, ok := o.controller(pod.Namespace, ref, KindDeployment)
		if !ok {
			if hash := pod.Labels["pod-template-hash"]; hash != "" {
				name, _ = strings.CutSuffix(ref.Name, "-"+hash)
				if name == ref.Name {
					name = ""
				}
			}
		}
		w.Deployment = name
	case group == "apps" && ref.Kind == KindStatefulSet:
		w.StatefulSet = ref.Name
	case group == "apps" && ref.Kind == KindDaemonSet:
		w.DaemonSet = ref.Name
	case group == "batch" && ref.Kind == KindJob:
		w.Job = ref.Name
		w.CronJob, _ = o.controller(pod.Namespace, ref, KindCronJob)
	}
	return w
}

// controller returns the name of the controller of kind want that owns
// the object ref names (a ReplicaSet or a Job in namespace ns), from the
// cache or one GET; ok is false when the lookup failed.
func (o *owners) controller(ns string, ref *metav1.OwnerReference, want string) (name string, ok bool) {
	o.mu.Lock()
	a, cached := o.cache[ref.UID]
	o.mu.Unlock()
	if cached && (a.expires.IsZero() || time.Now().Before(a.expires)) {
		return a.name, a.expires.IsZero()
	}

	o.lookups.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), ownerTimeout)
	defer cancel()
	var (
		meta     metav1.Object
		err      error
		resource string
	)
	switch ref.Kind {
	case KindReplicaSet:
		resource = "apps/replicasets"
		meta, err = getMeta(o.client.AppsV1().ReplicaSets(ns).Get(ctx, ref.Name, metav1.GetOptions{}))
	case KindJob:
		resource = "batch/jobs"
		meta, err = getMeta(o.client.BatchV1().Jobs(ns).Get(ctx, ref.Name, metav1.GetOptions{}))
	}
	if err == nil && meta.GetUID() != ref.UID {
		err = fmt.Errorf("%s %s/%s has UID %s, the pod's owner reference %s (replaced meanwhile)", resource, ns, ref.Name, meta.GetUID(), ref.UID)
	}
	if err != nil {
		o.failures.Add(1)
		o.mu.Lock()
		o.cache[ref.UID] = ownerAnswer{expires: time.Now().Add(failedOwnerTTL)}
		first := !o.warned[resource]
		o.warned[resource] = true
		o.mu.Unlock()
		if first {
			hint := ""
			if apierrors.IsForbidden(err) {
				hint = fmt.Sprintf(" (grant the agent's service account get on %s)", resource)
			}
			o.log.Warn("cannot read a pod's owner: its workload names stay partial"+hint, "resource", resource, "namespace", ns, "name", ref.Name, "err", err)
		}
		return "", false
	}
	if c := metav1.GetControllerOf(meta); c != nil && c.Kind == want {
		name = c.Name
	}
	o.mu.Lock()
	o.cache[ref.UID] = ownerAnswer{name: name}
	o.mu.Unlock()
	return name, true
}

// getMeta adapts a typed GET's answer to its object metadata.
func getMeta[T metav1.Object](obj T, err error) (metav1.Object, error) {
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// retain forgets the answers about owners no pod refers to any more.
func (o *owners) retain(live map[types.UID]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for uid := range o.cache {
		if !live[uid] {
			delete(o.cache, uid)
		}
	}
}

// size is the number of owners cached.
func (o *owners) size() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.cache)
}
