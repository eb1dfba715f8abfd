// quicgo-backend: a quic-go HTTP/3 backend for quiclb's journey test (see README.md for the contract).
//
//	quicgo-backend --name N --listen IP:PORT --dir DIR --cert FILE --key FILE
//	               [--idle-timeout-ms 120000] [--active-cid-limit 8] [--recv-buffer 4194304]
//
// stdout carries only JSON lines (ready, log, answers); everything else goes to stderr.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const (
	maxBodyBytes  = 64 * 1024 * 1024
	h3NoError     = 0x100
	startupWait   = 10 * time.Second
	reloadEvery   = 500 * time.Millisecond
	maxLineBytes  = 16 << 20 // a request line (the harness sends at most 2000 CIDs per request, ~90 KB)
	maxIDPrefix   = 64 << 10 // of an over-long line, the bytes searched for its "id"
	maxLogBacklog = 10_000
	maxLogQuote   = 200 // bytes of client input (method, path) quoted in a log line
	maxCauseQuote = 300 // bytes of a connection's end cause (it holds the peer's reason phrase) in a log line
)

// ---- stdout: JSON lines through one writer goroutine ---------------------------------------------------------

type output struct {
	ch      chan []byte
	done    chan struct{}
	dropped uint64
	mu      sync.Mutex
}

func newOutput() *output {
	o := &output{ch: make(chan []byte, maxLogBacklog), done: make(chan struct{})}
	go func() {
		w := bufio.NewWriterSize(os.Stdout, 64*1024)
		for line := range o.ch {
			w.Write(line)
			if len(o.ch) == 0 {
				w.Flush()
			}
		}
		w.Flush()
		close(o.done)
	}()
	return o
}

func (o *output) send(v any, mayDrop bool) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"event": "log", "line": "cannot encode: " + err.Error()})
	}
	b = append(b, '\n')
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ch == nil {
		return
	}
	if mayDrop {
		select {
		case o.ch <- b:
		default:
			o.dropped++
		}
		return
	}
	o.ch <- b
}

func (o *output) log(line string) {
	o.send(map[string]string{"event": "log", "line": line}, true)
}

// close flushes everything sent so far and stops the writer.
func (o *output) close() {
	o.mu.Lock()
	if o.ch != nil {
		close(o.ch)
		o.ch = nil
	}
	o.mu.Unlock()
	<-o.done
}

// ---- the body (test/journey/h3.ts bodyOf) --------------------------------------------------------------------

// bodyBlock: 64 KiB of SHA-256 output chained from the seed "quiclb journey body".
var bodyBlock = func() []byte {
	out := make([]byte, 0, 2048*32)
	h := sha256.Sum256([]byte("quiclb journey body"))
	for i := 0; i < 2048; i++ {
		out = append(out, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return out
}()

var pathRe = regexp.MustCompile(`^/(\d{1,9})$`)

// sizeOfPath: h3.ts sizeOfPath: `/n` with n <= 64 MiB, else -1.
func sizeOfPath(p string) int {
	m := pathRe.FindStringSubmatch(p)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n > maxBodyBytes {
		return -1
	}
	return n
}

// ---- the server ---------------------------------------------------------------------------------------------

type server struct {
	name  string
	out   *output
	audit *Audit
	gen   *Generator
	udp   *net.UDPConn // the socket; quic-go's Transport.Close does not close a conn it was given
	tr    *quic.Transport
	ln    *quic.Listener
	h3    *http3.Server

	ended    sync.WaitGroup // connection-end callbacks not yet run (their log lines)
	mu       sync.Mutex
	conns    map[*quic.Conn]struct{}
	stopping bool
	stopOnce sync.Once
}

func (s *server) handle(w http.ResponseWriter, r *http.Request) {
	rec := recordOf(r.Context())
	s.audit.mu.Lock()
	s.audit.requests++
	if rec != nil {
		rec.requests++
		rec.responses++ // as backend.ts servedFor: counted once this backend takes the request
		if rec.client != nil {
			rec.client.responses++
		}
	}
	s.audit.mu.Unlock()
	n := -1
	if r.Method == http.MethodGet {
		n = sizeOfPath(r.URL.Path)
	}
	w.Header().Set("x-served-by", s.name)
	if n < 0 {
		s.out.log(fmt.Sprintf("request %q %q: 404", clip(r.Method, maxLogQuote), clip(r.URL.Path, maxLogQuote)))
		w.WriteHeader(http.StatusNotFound)
		s.audit.mu.Lock()
		s.audit.responses++
		s.audit.mu.Unlock()
		return
	}
	w.Header().Set("content-type", "application/octet-stream")
	w.Header().Set("content-length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	for o := 0; o < n; o += len(bodyBlock) {
		if _, err := w.Write(bodyBlock[:min(len(bodyBlock), n-o)]); err != nil {
			return
		}
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.audit.mu.Lock()
	s.audit.responses++
	s.audit.mu.Unlock()
}

// clip: at most n bytes of client input for a log line, "..." marking a cut (%q escapes whatever it holds).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// isError: what counts as a connection error for `connectionErrors`: anything but an idle timeout, a close with
// NO_ERROR (transport) or H3_NO_ERROR / 0 (application), by either side, and our own stop.
func isError(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return false
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return !(ae.ErrorCode == h3NoError || ae.ErrorCode == 0)
	}
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		return te.ErrorCode != quic.NoError
	}
	return true
}

// connContext: Transport.ConnContext: a record per connection, and its end logged.
func (s *server) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	rec := &connRecord{remote: info.RemoteAddr.String(), lastAddr: info.RemoteAddr.String()}
	ctx = context.WithValue(ctx, recKey, rec)
	s.ended.Add(1)
	context.AfterFunc(ctx, func() {
		defer s.ended.Done()
		cause := context.Cause(ctx)
		why := "<nil>"
		if cause != nil {
			why = clip(cause.Error(), maxCauseQuote) // a CONNECTION_CLOSE's reason phrase is the peer's text
		}
		s.audit.mu.Lock()
		client, cids, reqs, dcids, last := rec.clientCid, len(rec.cids), rec.requests, 0, rec.lastAddr
		if rec.client != nil {
			dcids = len(rec.client.dcids)
		}
		bad := isError(cause) && !s.audit.stopped
		if bad && len(s.audit.connErrors) < maxConnErrors {
			s.audit.connErrors = append(s.audit.connErrors, fmt.Sprintf("%s (%s): %s", client, rec.remote, why))
		}
		s.audit.mu.Unlock()
		s.out.log(fmt.Sprintf("conn %s from %s ended: %s (requests %d, our CIDs issued %d, used %d, last address %s)",
			client, rec.remote, why, reqs, cids, dcids, last))
	})
	return ctx, nil
}

func (s *server) acceptLoop() {
	for {
		conn, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			conn.CloseWithError(h3NoError, "")
			continue
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		s.audit.mu.Lock()
		s.audit.conns++
		s.audit.mu.Unlock()
		go func() {
			s.h3.ServeQUICConn(conn)
			<-conn.Context().Done()
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

// stop closes the listener and every connection with H3_NO_ERROR (CONNECTION_CLOSE), then the transport, then the
// UDP socket (quic-go closes only a conn it created itself), so the IP:port is free for a new backend at once.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		s.audit.mu.Lock()
		s.audit.stopped = true
		s.audit.mu.Unlock()
		s.mu.Lock()
		s.stopping = true
		conns := make([]*quic.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.ln.Close()
		for _, c := range conns {
			c.CloseWithError(h3NoError, "")
		}
		deadline := time.After(time.Second)
		for _, c := range conns {
			select {
			case <-c.Context().Done():
			case <-deadline:
			}
		}
		s.h3.Close()
		s.tr.Close() // returns once quic-go's read loop has returned
		if err := s.udp.Close(); err != nil {
			s.out.log("closing the socket: " + err.Error())
		}
		// let the connection-end callbacks log before stdout closes (bounded)
		ended := make(chan struct{})
		go func() { s.ended.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(time.Second):
		}
	})
}

// ---- control protocol ---------------------------------------------------------------------------------------

type request struct {
	ID   json.RawMessage `json:"id"`
	Op   string          `json:"op"`
	Cids []string        `json:"cids"`
}

type clientAnswer struct {
	Responses int `json:"responses"`
	Dcids     int `json:"dcids"`
}

func (s *server) stats() map[string]any {
	a := s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	unowned := make(map[string]int, len(a.unowned))
	for k, v := range a.unowned {
		unowned[k] = v
	}
	return map[string]any{
		"audit": map[string]any{
			"datagrams": a.datagrams, "shortHeader": a.short, "foreignCids": a.foreign,
			"examples": append([]string{}, a.examples...), "probes": a.probes, "initial": a.initial,
			"handshake": a.handshake, "connections": a.conns, "requests": a.requests, "responses": a.responses,
			"issued": a.issued, "unroutableIssued": a.unroutable, "connectionErrors": append([]string{}, a.connErrors...),
			"stopped": a.stopped, "unsettledInitials": a.unsettled, "issuedForgotten": a.forgotten,
		},
		"unownedInitial": unowned,
	}
}

// answer handles one request line.
func (s *server) answer(line []byte) {
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		// answer with the id when at least that can be read (e.g. "cids" of the wrong type)
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		var id any
		if json.Unmarshal(line, &idOnly) == nil && len(idOnly.ID) > 0 {
			id = idOnly.ID
		}
		s.out.send(map[string]any{"id": id, "error": "bad request line: " + err.Error()}, false)
		return
	}
	var id any = json.RawMessage(req.ID)
	if len(req.ID) == 0 {
		id = nil
	}
	reply := map[string]any{"id": id}
	switch req.Op {
	case "stats":
		for k, v := range s.stats() {
			reply[k] = v
		}
		reply["generator"] = s.gen.Info()
	case "issued":
		out := []string{}
		for _, c := range req.Cids {
			if s.audit.isIssued(c) {
				out = append(out, c)
			}
		}
		reply["issued"] = out
	case "clients":
		out := map[string]clientAnswer{}
		s.audit.mu.Lock()
		for _, c := range req.Cids {
			if st, ok := s.audit.clients[c]; ok {
				out[c] = clientAnswer{Responses: st.responses, Dcids: len(st.dcids)}
			}
		}
		s.audit.mu.Unlock()
		reply["clients"] = out
	case "stop":
		// the pod is gone, its record is not: stats, issued and clients keep answering until stdin ends
		s.stop()
		reply["ok"] = true
	default:
		reply["error"] = fmt.Sprintf("unknown op %q", clip(req.Op, maxLogQuote))
	}
	s.out.send(reply, false)
}

// idOfPrefix: the "id" of a request line from its first bytes, when it comes before any member that does not fit
// in them (the harness writes "id" first); nil otherwise.
func idOfPrefix(prefix []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(prefix))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil
		}
		if k == "id" {
			// the member must be complete: what follows it (',' and a key, or '}') is in the prefix too
			if _, err := dec.Token(); err != nil {
				return nil
			}
			return v
		}
	}
	return nil
}

// readRequests: stdin lines until EOF (= stop, then exit). Over-long lines get an error answer (with the line's id
// when its first bytes hold it).
func (s *server) readRequests() {
	r := bufio.NewReaderSize(os.Stdin, 64*1024)
	var buf, head []byte
	tooLong := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) > maxLineBytes {
			head = append(head[:0], buf[:min(len(buf), maxIDPrefix)]...)
			if len(head) < maxIDPrefix {
				head = append(head, chunk[:min(len(chunk), maxIDPrefix-len(head))]...)
			}
			tooLong, buf = true, buf[:0]
		} else if !tooLong {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(buf) > 0 || tooLong {
			line := buf
			if tooLong {
				var id any
				if raw := idOfPrefix(head); raw != nil {
					id = raw
				}
				s.out.send(map[string]any{"id": id, "error": fmt.Sprintf("request line longer than %d bytes", maxLineBytes)}, false)
			} else if len(trimSpace(line)) > 0 {
				s.answer(line)
			}
		}
		buf, tooLong = buf[:0], false
		if err != nil {
			if err != io.EOF {
				s.out.log("stdin: " + err.Error())
			}
			s.stop()
			return
		}
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// ---- main ---------------------------------------------------------------------------------------------------

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "quicgo-backend: "+format+"\n", args...)
	os.Exit(code)
}

// recvBuffer: SO_RCVBUF as the kernel reports it (on Linux twice the size asked for); -1 if it cannot be read.
func recvBuffer(c *net.UDPConn) int {
	got := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
				got = n
			}
		})
	}
	return got
}

// setRecvBuffer: SO_RCVBUF, then SO_RCVBUFFORCE (root) when the kernel capped it; fine if both are capped. Also
// lowers a larger buffer to n. Returns what the kernel reports.
func setRecvBuffer(c *net.UDPConn, n int) int {
	_ = c.SetReadBuffer(n)
	got := 0
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
			if got < n { // Linux reports twice the requested size
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
				got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
			}
		})
	}
	return got
}

func main() {
	name := flag.String("name", "", "backend name (x-served-by)")
	listen := flag.String("listen", "", "IP:PORT")
	dir := flag.String("dir", "", "directory with configs.json and server-id (kubelet layout)")
	certFile := flag.String("cert", "", "TLS certificate (PEM)")
	keyFile := flag.String("key", "", "TLS key (PEM)")
	idleMs := flag.Int("idle-timeout-ms", 120000, "QUIC max idle timeout, ms")
	cidLimit := flag.Int("active-cid-limit", 8, "ignored: quic-go v0.65.0 has no knob (it keeps min(peer limit, 6) CIDs active)")
	recvBuf := flag.Int("recv-buffer", 4194304, "socket receive buffer, bytes")
	flag.CommandLine.SetOutput(os.Stderr)
	flag.Parse()
	_ = cidLimit
	if *name == "" || *listen == "" || *dir == "" || *certFile == "" || *keyFile == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if len(*name) > 126 {
		fail(2, "--name too long")
	}
	if *idleMs <= 0 {
		fail(2, "--idle-timeout-ms must be positive")
	}
	// quic-go's warning about buffer sizes goes to stderr via the log package; the buffer is ours to set.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fail(2, "TLS: %v", err)
	}
	out := newOutput()
	audit := NewAudit(out.log)
	gen := NewGenerator(*dir, out.log)
	gen.onMint = audit.minted

	// Wait (up to 10 s) for a usable config and server ID: the CID length is fixed for the transport's life.
	deadline := time.Now().Add(startupWait)
	for {
		gen.Reload(true)
		if gen.Fix() {
			break
		}
		if time.Now().After(deadline) {
			info := gen.Info()
			why := "unknown"
			if info.Reason != nil {
				why = *info.Reason
			}
			out.close()
			fail(2, "no usable QUIC-LB config and server ID in %s after %s: %s", *dir, startupWait, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	audit.cidLen = gen.ConnectionIDLen()

	addr, err := net.ResolveUDPAddr("udp", *listen)
	if err != nil {
		out.close()
		fail(2, "--listen: %v", err)
	}
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		out.close()
		fail(2, "listen %s: %v", *listen, err)
	}
	got := setRecvBuffer(udp, *recvBuf)
	fmt.Fprintf(os.Stderr, "quicgo-backend %s: SO_RCVBUF %d (asked %d)\n", *name, got, *recvBuf)

	s := &server{name: *name, out: out, audit: audit, gen: gen, udp: udp, conns: make(map[*quic.Conn]struct{})}
	s.tr = &quic.Transport{
		Conn:                  newAuditConn(udp, audit),
		ConnectionIDGenerator: gen,
		// always a Retry, like the TS backend
		VerifySourceAddress: func(net.Addr) bool { return true },
		ConnContext:         s.connContext,
	}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	qconf := &quic.Config{
		MaxIdleTimeout:  time.Duration(*idleMs) * time.Millisecond,
		KeepAlivePeriod: 0,
		Tracer:          audit.tracer,
		// migration stays allowed (quic-go >= v0.51 does not send disable_active_migration)
	}
	s.ln, err = s.tr.Listen(tlsConf, qconf)
	if err != nil {
		out.close()
		fail(2, "quic listen: %v", err)
	}
	// Listen set the socket up (quic-go's wrapConn, sys_conn_buffers.go): when SO_RCVBUF read below 7 MiB it asked
	// for 7 MiB with SetReadBuffer and, if that fell short, with SO_RCVBUFFORCE through SyscallConn (which works as
	// root), whatever we had set. Set --recv-buffer again so the flag is what counts. (SO_SNDBUF is left to quic-go.)
	if now := recvBuffer(udp); now != got {
		got = setRecvBuffer(udp, *recvBuf)
		fmt.Fprintf(os.Stderr, "quicgo-backend %s: quic-go set SO_RCVBUF to %d; set back to %d\n", *name, now, got)
	}
	mux := http.HandlerFunc(s.handle)
	s.h3 = &http3.Server{Handler: mux}
	go s.acceptLoop()

	go func() {
		t := time.NewTicker(reloadEvery)
		defer t.Stop()
		for range t.C {
			gen.Reload(false)
		}
	}()

	out.send(map[string]any{"event": "ready", "generator": gen.Info()}, false)

	done := make(chan struct{})
	go func() {
		s.readRequests()
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
		s.stop()
	}
	out.close()
	os.Exit(0)
}
