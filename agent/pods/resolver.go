package pods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Options configure a Resolver.
type Options struct {
	// Client reads the API server (NewClient; a fake clientset in tests).
	Client kubernetes.Interface
	// NodeName is this node's name: only its pods are watched
	// (NodeName resolves it from the configuration and NODE_NAME).
	NodeName string
	// Changed, if set, is called after a pod of the node was added or
	// updated, so that processes whose pod was not known (Lookup's
	// Pending) can be looked up again. It runs on the informer's
	// goroutine and must not block.
	Changed func()
	Log     *slog.Logger
}

// Result says what Lookup found.
type Result int

const (
	// Found: the metadata is the process's container's.
	Found Result = iota
	// NotInPod: the process is in no pod of this node (a host process,
	// or a container kubelet does not manage).
	NotInPod
	// Pending: the process is in a pod's cgroup, but the pod is not in
	// the informer yet, or its status does not name the container yet
	// (kubelet reports a started container's id a second or so later).
	// Look it up again when Options.Changed is called.
	Pending
)

func (r Result) String() string {
	switch r {
	case Found:
		return "found"
	case NotInPod:
		return "not in a pod"
	case Pending:
		return "pending"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// mirrorAnnotation holds a static pod's kubelet config hash on its mirror
// pod: the UID its cgroup is named by.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// lastApplied is kubectl's copy of the whole object: dropped from the
// cache, it can be most of a pod's size.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Resolver holds the metadata of this node's pods, from an informer that
// lists and watches only them (field selector spec.nodeName=<node>), and
// answers which pod and container a process runs in (Lookup). Owners are
// resolved when a pod is added (see owners), not on lookups, so Lookup is
// a map read. A deleted pod's entries, and the owners no other pod
// refers to, are dropped at once.
//
// RBAC: get, list, watch on pods; get on apps/replicasets and
// batch/jobs. Nothing else.
type Resolver struct {
	opts    Options
	log     *slog.Logger
	owners  *owners
	factory informers.SharedInformerFactory
	synced  cache.InformerSynced
	stop    chan struct{}
	once    sync.Once

	mu          sync.RWMutex
	pods        map[types.UID]*podEntry
	mirrors     map[string]types.UID // static pod config hash → mirror pod UID
	byContainer map[string]containerOf

	events atomic.Uint64
}

// containerOf names a container of a cached pod.
type containerOf struct {
	pod  types.UID
	name string
}

// podEntry is a cached pod and what was derived from it once.
type podEntry struct {
	pod      *corev1.Pod // the informer's object: read only
	workload Workload
	services map[string]string // container name → ServiceName
	names    []string          // every container: regular, init, ephemeral
	ids      []string          // container ids its status names
	mirror   string
}

// Start starts the informer of the node's pods and returns without
// waiting for its first list (WaitSynced does). Errors: a missing client
// or node name.
func Start(opts Options) (*Resolver, error) {
	if opts.Client == nil {
		return nil, errors.New("pods: no Kubernetes client")
	}
	if opts.NodeName == "" {
		return nil, errors.New("pods: no node name: set kubernetes.nodeName (--node-name) or the NODE_NAME environment variable (downward API: spec.nodeName)")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	r := &Resolver{
		opts: opts, log: opts.Log, owners: newOwners(opts.Client, opts.Log), stop: make(chan struct{}),
		pods: map[types.UID]*podEntry{}, mirrors: map[string]types.UID{}, byContainer: map[string]containerOf{},
	}
	r.factory = informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
		}),
		informers.WithTransform(trim))
	inf := r.factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.upsert(obj) },
		UpdateFunc: func(_, obj any) { r.upsert(obj) },
		DeleteFunc: r.remove,
	}); err != nil {
		return nil, fmt.Errorf("pods: watch the node's pods: %w", err)
	}
	r.synced = inf.HasSynced
	r.factory.Start(r.stop)
	return r, nil
}

// trim drops what the resolver never reads from a cached pod.
func trim(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		p.ManagedFields = nil
		if _, ok := p.Annotations[lastApplied]; ok {
			a := make(map[string]string, len(p.Annotations))
			for k, v := range p.Annotations {
				if k != lastApplied {
					a[k] = v
				}
			}
			p.Annotations = a
		}
	}
	return obj, nil
}

// WaitSynced waits until the informer has listed the node's pods, or ctx
// is done; it reports whether it has.
func (r *Resolver) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), r.synced)
}

// Close stops the informer. Lookups still answer from what was cached.
func (r *Resolver) Close() {
	r.once.Do(func() {
		close(r.stop)
		r.factory.Shutdown()
	})
}

// Lookup returns the metadata of the container ref names (ReadCgroup):
// by its container id in the pods' statuses, else, when the cgroup names
// a known pod with a single container (no init or ephemeral ones), that
// container — so a single-container pod is known from its process's
// exec, before kubelet reports the container's id.
func (r *Resolver) Lookup(ref Ref) (*Metadata, Result) {
	if ref.IsZero() {
		return nil, NotInPod
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if c, ok := r.byContainer[ref.ContainerID]; ok {
		return r.pods[c.pod].metadata(c.name, ref.ContainerID), Found
	}
	if ref.PodUID == "" {
		return nil, NotInPod
	}
	uid := types.UID(ref.PodUID)
	if m, ok := r.mirrors[ref.PodUID]; ok {
		uid = m
	}
	e := r.pods[uid]
	switch {
	case e == nil:
		return nil, Pending
	case len(e.names) == 1:
		return e.metadata(e.names[0], ref.ContainerID), Found
	}
	return nil, Pending
}

func (e *podEntry) metadata(container, id string) *Metadata {
	p := e.pod
	return &Metadata{
		Namespace: p.Namespace, Pod: p.Name, PodUID: string(p.UID), Container: container, ContainerID: id,
		Node: p.Spec.NodeName, Workload: e.workload, ServiceName: e.services[container],
		Labels: p.Labels, Annotations: p.Annotations,
	}
}

// Stats are the resolver's counts.
type Stats struct {
	Pods       int  `json:"pods"`       // pods of the node cached
	Containers int  `json:"containers"` // container ids their statuses name
	Owners     int  `json:"owners"`     // ReplicaSets and Jobs whose controller is cached
	Synced     bool `json:"synced"`     // the first list is done
	// Events are pod adds, updates and deletes received.
	Events uint64 `json:"events"`
	// OwnerLookups are GETs of a ReplicaSet or Job; OwnerLookupsFailed
	// those that failed (RBAC, network): workload names stay partial.
	OwnerLookups       uint64 `json:"ownerLookups"`
	OwnerLookupsFailed uint64 `json:"ownerLookupsFailed"`
}

// Stats returns the counts now.
func (r *Resolver) Stats() Stats {
	r.mu.RLock()
	s := Stats{Pods: len(r.pods), Containers: len(r.byContainer)}
	r.mu.RUnlock()
	s.Owners = r.owners.size()
	s.Synced = r.synced()
	s.Events = r.events.Load()
	s.OwnerLookups, s.OwnerLookupsFailed = r.owners.lookups.Load(), r.owners.failures.Load()
	return s
}

// upsert caches a pod added or updated.
func (r *Resolver) upsert(obj any) {
	r.events.Add(1)
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName != r.opts.NodeName {
		// The server filters by node; a client that does not (a fake
		// one) must not fill the cache with other nodes' pods.
		return
	}
	e := &podEntry{pod: pod, services: map[string]string{}, mirror: pod.Annotations[mirrorAnnotation]}
	r.mu.RLock()
	old := r.pods[pod.UID]
	r.mu.RUnlock()
	if old != nil && sameOwner(old.pod, pod) {
		e.workload = old.workload
	} else {
		e.workload = r.owners.workload(pod) // may GET: outside the lock
	}
	add := func(c *corev1.Container) {
		e.names = append(e.names, c.Name)
		e.services[c.Name] = ServiceName(pod, c, e.workload)
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i])
	}
	for i := range pod.Spec.EphemeralContainers {
		c := corev1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		add(&c)
	}
	byID := map[string]string{}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if id := runtimeID(cs.ContainerID); id != "" {
				byID[id] = cs.Name
			}
		}
	}

	r.mu.Lock()
	if old != nil {
		r.unindex(old)
	}
	for id, name := range byID {
		e.ids = append(e.ids, id)
		r.byContainer[id] = containerOf{pod: pod.UID, name: name}
	}
	if e.mirror != "" {
		r.mirrors[e.mirror] = pod.UID
	}
	r.pods[pod.UID] = e
	r.mu.Unlock()
	if r.opts.Changed != nil {
		r.opts.Changed()
	}
}

// sameOwner: a and b have the same controller reference (an update left
// the workload as it was).
func sameOwner(a, b *corev1.Pod) bool {
	ca, cb := metav1.GetControllerOf(a), metav1.GetControllerOf(b)
	if ca == nil || cb == nil {
		return ca == cb
	}
	return ca.UID == cb.UID && ca.Name == cb.Name
}

// remove drops a deleted pod and the owners only it referred to.
func (r *Resolver) remove(obj any) {
	r.events.Add(1)
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	if e, ok := r.pods[pod.UID]; ok {
		r.unindex(e)
		delete(r.pods, pod.UID)
	}
	live := map[types.UID]bool{}
	for _, e := range r.pods {
		if c := metav1.GetControllerOf(e.pod); c != nil {
			live[c.UID] = true
		}
	}
	r.mu.Unlock()
	r.owners.retain(live)
}

// unindex removes e's container ids and mirror hash; r.mu is held.
func (r *Resolver) unindex(e *podEntry) {
	for _, id := range e.ids {
		if c, ok := r.byContainer[id]; ok && c.pod == e.pod.UID {
			delete(r.byContainer, id)
		}
	}
	if e.mirror != "" && r.mirrors[e.mirror] == e.pod.UID {
		delete(r.mirrors, e.mirror)
	}
}

// runtimeID strips the runtime scheme of a status's container id
// ("containerd://<id>", "cri-o://<id>", "docker://<id>").
func runtimeID(s string) string {
	if _, id, ok := strings.Cut(s, "://"); ok {
		return id
	}
	return s
}
