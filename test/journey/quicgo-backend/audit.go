package main

// The journey's audit (test/journey/backend.ts record()): every datagram the socket receives is inspected before
// quic-go sees it, and each connection's record (client's first SCID, the CIDs we issued to it, the CIDs of ours its
// client sent to, responses) is kept for the `clients` request.
//
// How the per-connection record is filled (verified in quic-go v0.65.0's source):
//   - Transport.ConnContext (server.go handleInitialImpl) runs when quic-go creates a server connection (after the
//     Retry) and puts a *connRecord in the context;
//   - Config.Tracer gets a context derived from it (server.go: config.Tracer(ctx, false, connID)) and returns a
//     qlogwriter.Trace whose recorders see every packet the connection sends and receives
//     (connection.go / connection_logging.go RecordEvent(qlog.PacketSent / qlog.PacketReceived)):
//       * the SCID of the first long-header packet received = the client's first SCID ("clientCid");
//       * the DCID of received long-header packets (the Retry SCID we minted), the SCID of long-header packets sent
//         (the connection's first CID) and the CIDs of NEW_CONNECTION_ID frames sent = the CIDs we issued to it;
//   - http3 derives each request's context from the connection's (http3/server.go newRawServerConn: conn.Context()),
//     so the handler finds the record through r.Context().
// A CID is attached to a connection only when the generator minted it (the issued set), so the record holds ours only.

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"net"
	"sync"

	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
	"golang.org/x/net/ipv4"
)

const (
	maxExamples       = 10
	maxIssued         = 200_000 // issued CIDs remembered (oldest forgotten first)
	maxUnownedInitial = 20_000  // distinct unowned Initial/0-RTT DCIDs remembered
	maxClients        = 100_000 // client connections remembered for `clients` (oldest forgotten first)
	maxCidsPerConn    = 64      // CIDs remembered per connection
	maxDcidsPerClient = 16      // as backend.ts
	maxConnErrors     = 20
	maxAddrLogs       = 4 // remote-address change log lines per connection
)

// clientStat: what `clients` reports for one clientCid.
type clientStat struct {
	responses int
	dcids     map[string]struct{}
}

// connRecord: one server connection.
type connRecord struct {
	remote    string
	clientCid string      // hex, "" until the first Initial was traced
	client    *clientStat // nil until clientCid is known
	cids      [][]byte    // CIDs we issued to it
	lastAddr  string
	addrLogs  int
	requests  int
	responses int
}

// Audit holds the counters and maps; one mutex guards everything (the volume of a test is small).
type Audit struct {
	mu         sync.Mutex
	cidLen     int
	log        func(string)
	datagrams  uint64
	short      uint64
	foreign    uint64
	examples   []string
	probes     uint64
	initial    uint64
	handshake  uint64
	conns      uint64
	requests   uint64
	responses  uint64
	issued     uint64
	unroutable uint64
	connErrors []string
	stopped    bool
	// issuedSet: every CID minted (key: raw bytes) -> the connection it was issued to (nil until known)
	issuedSet   map[string]*connRecord
	issuedOrder []string // FIFO ring for the bound
	issuedHead  int
	forgotten   int // issued CIDs dropped from issuedSet by the bound: an Initial carrying one is not recognised
	unowned     map[string]int
	unsettled   int // Initial/0-RTT datagrams with an unowned DCID past the unowned bound: never settled
	clients     map[string]*clientStat
	clientOrder []string
	clientHead  int
}

func NewAudit(log func(string)) *Audit {
	return &Audit{
		log:       log,
		examples:  []string{},
		issuedSet: make(map[string]*connRecord),
		unowned:   make(map[string]int),
		clients:   make(map[string]*clientStat),
	}
}

// minted is the generator's hook: every CID it returns.
func (a *Audit) minted(cid []byte, unroutable bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.issued++
	if unroutable {
		a.unroutable++
	}
	k := string(cid)
	if _, ok := a.issuedSet[k]; ok {
		return
	}
	if len(a.issuedOrder) < maxIssued {
		a.issuedOrder = append(a.issuedOrder, k)
	} else {
		delete(a.issuedSet, a.issuedOrder[a.issuedHead])
		a.forgotten++
		a.issuedOrder[a.issuedHead] = k
		a.issuedHead = (a.issuedHead + 1) % maxIssued
	}
	a.issuedSet[k] = nil
}

func (a *Audit) isIssued(hexCid string) bool {
	b, err := hex.DecodeString(hexCid)
	if err != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.issuedSet[string(b)]
	return ok
}

func (a *Audit) foreignLocked(kind string, dcid []byte) {
	a.foreign++
	if len(a.examples) < maxExamples {
		a.examples = append(a.examples, kind+":"+hex.EncodeToString(dcid))
	}
}

// inspect is backend.ts record() for one received datagram.
func (a *Audit) inspect(msg []byte, addr net.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.datagrams++
	if len(msg) < 1 {
		return
	}
	if msg[0]&0x80 == 0 {
		a.short++
		dcid := msg[1:min(len(msg), 1+a.cidLen)]
		owner, ok := a.issuedSet[string(dcid)]
		if !ok {
			a.foreignLocked("short", dcid)
			return
		}
		if owner == nil {
			return
		}
		if owner.client != nil && len(owner.client.dcids) < maxDcidsPerClient {
			owner.client.dcids[string(dcid)] = struct{}{}
		}
		if addr != nil {
			if s := addr.String(); s != owner.lastAddr {
				if owner.lastAddr != "" && owner.addrLogs < maxAddrLogs {
					owner.addrLogs++
					a.log("conn " + owner.clientCid + ": client address " + owner.lastAddr + " -> " + s)
				}
				owner.lastAddr = s
			}
		}
		return
	}
	if len(msg) < 6 || binary.BigEndian.Uint32(msg[1:5]) != 1 {
		a.probes++
		return
	}
	dcid := msg[6:min(len(msg), 6+int(msg[5]))]
	_, ours := a.issuedSet[string(dcid)]
	switch (msg[0] >> 4) & 3 {
	case 0, 1:
		if (msg[0]>>4)&3 == 0 {
			a.initial++
		}
		if !ours {
			h := hex.EncodeToString(dcid)
			if n, ok := a.unowned[h]; ok || len(a.unowned) < maxUnownedInitial {
				a.unowned[h] = n + 1
			} else {
				a.unsettled++
			}
		}
	case 2:
		a.handshake++
		if !ours {
			a.foreignLocked("handshake", dcid)
		}
	default:
		a.foreignLocked("retry", dcid)
	}
}

// attachLocked: cid (if we minted it) belongs to rec.
func (a *Audit) attachLocked(rec *connRecord, cid []byte) {
	owner, ok := a.issuedSet[string(cid)]
	if !ok || owner == rec {
		return
	}
	a.issuedSet[string(cid)] = rec
	if len(rec.cids) < maxCidsPerConn {
		rec.cids = append(rec.cids, append([]byte{}, cid...))
	}
}

func (a *Audit) setClientLocked(rec *connRecord, scid []byte) {
	rec.clientCid = hex.EncodeToString(scid)
	st, ok := a.clients[rec.clientCid]
	if !ok {
		st = &clientStat{dcids: make(map[string]struct{})}
		if len(a.clientOrder) < maxClients {
			a.clientOrder = append(a.clientOrder, rec.clientCid)
		} else {
			delete(a.clients, a.clientOrder[a.clientHead])
			a.clientOrder[a.clientHead] = rec.clientCid
			a.clientHead = (a.clientHead + 1) % maxClients
		}
		a.clients[rec.clientCid] = st
	}
	rec.client = st
}

// ---- qlog tracer ----------------------------------------------------------------------------------------------

type recKeyType struct{}

var recKey recKeyType

func recordOf(ctx context.Context) *connRecord {
	r, _ := ctx.Value(recKey).(*connRecord)
	return r
}

type trace struct {
	a   *Audit
	rec *connRecord
}

func (t *trace) AddProducer() qlogwriter.Recorder { return t }
func (t *trace) Close() error                     { return nil }

func isLong(p qlog.PacketType) bool {
	return p == qlog.PacketTypeInitial || p == qlog.PacketTypeHandshake || p == qlog.PacketType0RTT
}

func (t *trace) received(h *qlog.PacketHeader) {
	if !isLong(h.PacketType) {
		return
	}
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	if t.rec.clientCid == "" && h.SrcConnectionID.Len() > 0 {
		t.a.setClientLocked(t.rec, h.SrcConnectionID.Bytes())
	}
	t.a.attachLocked(t.rec, h.DestConnectionID.Bytes())
}

func (t *trace) sent(h *qlog.PacketHeader, frames []qlog.Frame) {
	long := isLong(h.PacketType)
	var ncids [][]byte
	for _, f := range frames {
		if nc, ok := f.Frame.(*qlog.NewConnectionIDFrame); ok {
			ncids = append(ncids, nc.ConnectionID.Bytes())
		}
	}
	if !long && len(ncids) == 0 {
		return
	}
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	if long {
		t.a.attachLocked(t.rec, h.SrcConnectionID.Bytes())
	}
	for _, c := range ncids {
		t.a.attachLocked(t.rec, c)
	}
}

func (t *trace) RecordEvent(ev qlogwriter.Event) {
	switch e := ev.(type) {
	case qlog.PacketReceived:
		t.received(&e.Header)
	case *qlog.PacketReceived:
		t.received(&e.Header)
	case qlog.PacketSent:
		t.sent(&e.Header, e.Frames)
	case *qlog.PacketSent:
		t.sent(&e.Header, e.Frames)
	}
}

// tracer is quic.Config.Tracer.
func (a *Audit) tracer(ctx context.Context, isClient bool, _ qlog.ConnectionID) qlogwriter.Trace {
	rec := recordOf(ctx)
	if isClient || rec == nil {
		return nil
	}
	return &trace{a: a, rec: rec}
}

// ---- the socket wrapper ------------------------------------------------------------------------------------------

// auditConn is a *net.UDPConn as quic-go's OOBCapablePacketConn (so GSO, ECN, DF and batched reads stay on) whose
// ReadBatch (sys_conn_oob.go: used instead of ipv4.NewPacketConn when the conn has it) inspects each datagram
// before handing it to quic-go.
type auditConn struct {
	*net.UDPConn
	batch *ipv4.PacketConn
	audit *Audit
}

func newAuditConn(c *net.UDPConn, a *Audit) *auditConn {
	return &auditConn{UDPConn: c, batch: ipv4.NewPacketConn(c), audit: a}
}

func (c *auditConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := c.batch.ReadBatch(ms, flags)
	for i := 0; i < n; i++ {
		if len(ms[i].Buffers) > 0 {
			c.audit.inspect(ms[i].Buffers[0][:ms[i].N], ms[i].Addr)
		}
	}
	return n, err
}

// ReadFrom is not used by quic-go when ReadBatch exists; inspected anyway for completeness.
func (c *auditConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(b)
	if n > 0 {
		c.audit.inspect(b[:n], addr)
	}
	return n, addr, err
}

// SetReadBuffer, SetWriteBuffer and SyscallConn are the socket's own: quic-go v0.65.0 (sys_conn_buffers.go) raises
// SO_RCVBUF and SO_SNDBUF to 7 MiB when they read below that, with SO_RCVBUFFORCE/SO_SNDBUFFORCE through SyscallConn
// if SetReadBuffer/SetWriteBuffer fall short, so overriding SetReadBuffer alone would not stop it. main() sets
// --recv-buffer again after Transport.Listen instead.
