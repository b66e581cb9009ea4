// Command hedui-go-front is a MEASUREMENT SPIKE, not a shipped component (issue 13, see
// README.md beside it): a transparent gRPC proxy in Go standing where node/front/proxy.py
// stands, so bench/bench_shedding.py can measure whether a front in a compiled language keeps
// the admitted calls' p99 within 2x of the unloaded p99 under a burst.
//
// What it does, as node/front/proxy.py does:
//   - ends mTLS on -listen (the node's server certificate and key, client certificates
//     required and verified against the federation CA);
//   - admits or refuses each call of the node's own services at once: a global cap and a
//     per-caller share keyed by the client certificate's CN (node/admission.py's rule, same
//     RESOURCE_EXHAUSTED status and "OVERLOADED: node: ..." details); health and reflection
//     take no slot; the workers' internal methods are UNIMPLEMENTED;
//   - forwards admitted calls as raw bytes (no decoding: the "grpc-proxy" pattern, an
//     UnknownServiceHandler and a pass-through codec) to one worker's unix socket, with the
//     caller's certificate (PEM) in metadata x-hedui-front-peer-cert-bin (node/peer.py
//     FORWARDED_CERT), the caller's other metadata and deadline; statuses, headers and
//     trailers come back unchanged.
//
// What it does not do (a product front would have to): refusal tallies handed to a worker for
// the audit log, metrics, the ops port, starting and watching workers, several workers.
//
// With -timeline PATH it stamps "seen" (the call reached the handler) and "out" (the handler
// returns) on CLOCK_MONOTONIC, the clock of Python's time.monotonic, for every call tagged
// x-bench-id and writes them as JSON to PATH on SIGTERM, in bench/_node_timeline.py's format.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// forwardedCert is node/peer.py's FORWARDED_CERT (a -bin key: gRPC base64-encodes it).
const forwardedCert = "x-hedui-front-peer-cert-bin"

const benchTag = "x-bench-id"

// nanotime is CLOCK_MONOTONIC, the clock of Python's time.monotonic() (one clock for every
// process of the machine), so the stamps compare with the clients' and the worker's.
func nanotime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// frame is a message as bytes: the pass-through codec neither decodes nor encodes.
type frame struct{ payload []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.(*frame).payload, nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	f := v.(*frame)
	f.payload = append(f.payload[:0], data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" } // the content-subtype a worker expects
func (rawCodec) String() string { return "proto" }

// admission is node/admission.py's Admission: a cap on calls in progress, and a share per
// caller (while others hold slots, at most an equal split of the cap).
type admission struct {
	mu        sync.Mutex
	cap       int
	perCaller int
	held      map[string]int
	total     int
}

func newAdmission(cap, perCaller int) *admission {
	if perCaller <= 0 {
		q := cap / 4
		if q < 1 {
			q = 1
		}
		perCaller = cap - q
		if perCaller < 1 {
			perCaller = 1
		}
	}
	return &admission{cap: cap, perCaller: perCaller, held: map[string]int{}}
}

func (a *admission) tryAcquire(caller string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	mine := a.held[caller]
	others := 0
	for c, n := range a.held {
		if n > 0 && c != caller {
			others++
		}
	}
	share := a.perCaller
	if others > 0 {
		split := a.cap / (others + 1)
		if split < 1 {
			split = 1
		}
		if split < share {
			share = split
		}
	}
	if a.total >= a.cap {
		return status.Errorf(codes.ResourceExhausted,
			"OVERLOADED: node: %d calls in progress, capacity %d; retry with back-off", a.total, a.cap)
	}
	if mine >= share {
		return status.Errorf(codes.ResourceExhausted,
			"OVERLOADED: node: %s holds %d of %d call slots, its share is %d; retry with back-off", caller, mine, a.cap, share)
	}
	a.held[caller] = mine + 1
	a.total++
	return nil
}

func (a *admission) release(caller string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.held[caller] - 1; n > 0 {
		a.held[caller] = n
	} else {
		delete(a.held, caller)
	}
	a.total--
}

type stamp struct {
	tag, kind string
	t         int64
}

type front struct {
	adm    *admission
	worker *grpc.ClientConn
	mu     sync.Mutex
	stamps []stamp
	record bool
}

// hop is the metadata a caller may not pass on: transport headers, and the identity key.
var hop = map[string]bool{"user-agent": true, "te": true, "content-type": true, "grpc-timeout": true,
	"grpc-encoding": true, "grpc-accept-encoding": true, forwardedCert: true}

func (f *front) handle(_ interface{}, ss grpc.ServerStream) error {
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	if tags := md.Get(benchTag); f.record && len(tags) > 0 {
		f.stamp(tags[0], "seen")
		// "out": the handler returns, the answer or status about to go back to the caller.
		defer f.stamp(tags[0], "out")
	}
	method, _ := grpc.MethodFromServerStream(ss)
	if strings.HasPrefix(method, "/hedui.front.") {
		return status.Errorf(codes.Unimplemented, "method %s not found", method)
	}
	var cert *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			cert = ti.State.PeerCertificates[0]
		}
	}
	if cert == nil { // cannot happen with RequireAndVerifyClientCert
		return status.Error(codes.Unauthenticated, "NO_CLIENT_CERT: peer: got no client certificate, want a federation member certificate")
	}
	if !strings.HasPrefix(method, "/grpc.health.") && !strings.HasPrefix(method, "/grpc.reflection.") {
		caller := cert.Subject.CommonName
		if err := f.adm.tryAcquire(caller); err != nil {
			return err
		}
		defer f.adm.release(caller)
	}
	out := metadata.MD{}
	for k, v := range md {
		if !hop[k] && !strings.HasPrefix(k, ":") {
			out[k] = v
		}
	}
	out.Set(forwardedCert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	// The caller's context: its deadline goes with the call, its cancellation cancels it.
	cctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := grpc.NewClientStream(cctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, f.worker, method,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	up := make(chan error, 1)
	go func() { // caller -> worker
		for {
			m := &frame{}
			if err := ss.RecvMsg(m); err != nil {
				if err == io.EOF {
					up <- cs.CloseSend()
				} else {
					up <- err
				}
				return
			}
			if err := cs.SendMsg(m); err != nil {
				up <- err
				return
			}
		}
	}()
	// worker -> caller; the worker's answer (status, trailers) ends the call.
	first := true
	for {
		m := &frame{}
		err := cs.RecvMsg(m)
		if first {
			first = false
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				if serr := ss.SendHeader(h); serr != nil {
					return serr
				}
			}
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err // the worker's status, unchanged
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
}

func (f *front) stamp(tag, kind string) {
	t := nanotime()
	f.mu.Lock()
	f.stamps = append(f.stamps, stamp{tag, kind, t})
	f.mu.Unlock()
}

func (f *front) dump(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][3]interface{}, len(f.stamps))
	for i, s := range f.stamps {
		out[i] = [3]interface{}{s.tag, s.kind, float64(s.t) / 1e9}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return ioutil.WriteFile(path, b, 0o600)
}

func mustRead(path string) []byte {
	b, err := ioutil.ReadFile(path)
	if err != nil {
		log.Fatalf("hedui-go-front: %v", err)
	}
	return b
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "host:port to serve on (mTLS)")
	certPath := flag.String("cert", "", "server certificate (PEM)")
	keyPath := flag.String("key", "", "server private key (PEM, unencrypted)")
	caPath := flag.String("ca", "", "federation CA (PEM): client certificates must chain to it")
	workerSock := flag.String("worker", "", "the worker's unix socket path")
	capN := flag.Int("cap", 8, "[node] max_concurrent_rpcs")
	perCaller := flag.Int("per-caller", 0, "[node] max_concurrent_per_caller (0: node/admission.py's default)")
	timeline := flag.String("timeline", "", "write the 'seen' stamps of tagged calls here on SIGTERM")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here (until SIGTERM)")
	flag.Parse()
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatalf("hedui-go-front: %v", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatalf("hedui-go-front: %v", err)
		}
		defer pprof.StopCPUProfile()
	}

	pair, err := tls.X509KeyPair(mustRead(*certPath), mustRead(*keyPath))
	if err != nil {
		log.Fatalf("hedui-go-front: key pair: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustRead(*caPath)) {
		log.Fatalf("hedui-go-front: no CA certificate in %s", *caPath)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})

	sock := *workerSock
	conn, err := grpc.Dial("passthrough:///localhost", grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(32<<20)))
	if err != nil {
		log.Fatalf("hedui-go-front: worker: %v", err)
	}
	f := &front{adm: newAdmission(*capN, *perCaller), worker: conn, record: *timeline != ""}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.CustomCodec(rawCodec{}), grpc.UnknownServiceHandler(f.handle),
		grpc.MaxRecvMsgSize(32<<20), grpc.MaxSendMsgSize(64<<20))
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("hedui-go-front: cannot bind %s: %v", *listen, err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Stop()
	}()
	fmt.Printf("hedui-go-front serving on %s (cap %d, per caller %d)\n", lis.Addr(), f.adm.cap, f.adm.perCaller)
	os.Stdout.Sync()
	start := time.Now()
	if err := srv.Serve(lis); err != nil {
		log.Printf("hedui-go-front: %v", err)
	}
	if *timeline != "" {
		if err := f.dump(*timeline); err != nil {
			log.Fatalf("hedui-go-front: timeline: %v", err)
		}
	}
	log.Printf("hedui-go-front: stopped after %s", time.Since(start).Round(time.Millisecond))
}
