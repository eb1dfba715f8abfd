package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
)

const testCidLen = 8

func cidOf(b byte) []byte { return bytes.Repeat([]byte{b}, testCidLen) }

func shortPacket(dcid []byte) []byte {
	return append(append([]byte{0x40}, dcid...), make([]byte, 24)...)
}

// longPacket: a long header of the given type (0 Initial, 1 0-RTT, 2 Handshake, 3 Retry) and version, SCID 0x5c..
func longPacket(typ byte, version uint32, dcid []byte) []byte {
	b := []byte{0xc0 | typ<<4}
	b = binary.BigEndian.AppendUint32(b, version)
	b = append(b, byte(len(dcid)))
	b = append(b, dcid...)
	b = append(b, 4, 0x5c, 0x5c, 0x5c, 0x5c)
	return append(b, make([]byte, 32)...)
}

type auditCounts struct {
	datagrams, short, foreign, probes, initial, handshake uint64
}

func countsOf(a *Audit) auditCounts {
	return auditCounts{a.datagrams, a.short, a.foreign, a.probes, a.initial, a.handshake}
}

// TestAuditInspect: backend.ts record()'s rule, datagram by datagram.
func TestAuditInspect(t *testing.T) {
	var logs []string
	a := NewAudit(func(s string) { logs = append(logs, s) })
	a.cidLen = testCidLen
	own, own2, foreign := cidOf(0x11), cidOf(0x22), cidOf(0x99)
	a.minted(own, false)
	a.minted(own2, false)
	// own2 belongs to a connection whose client is known (what the tracer does)
	rec := &connRecord{remote: "192.0.2.1:1000", lastAddr: "192.0.2.1:1000"}
	a.setClientLocked(rec, []byte{0xc1, 0xc2})
	a.attachLocked(rec, own2)
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	moved := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 2000}

	steps := []struct {
		name string
		msg  []byte
		addr net.Addr
		want auditCounts // after the step
	}{
		{"short, own DCID (no connection yet)", shortPacket(own), from, auditCounts{1, 1, 0, 0, 0, 0}},
		{"short, own DCID of a connection", shortPacket(own2), from, auditCounts{2, 2, 0, 0, 0, 0}},
		{"short, own DCID of a connection, new address", shortPacket(own2), moved, auditCounts{3, 3, 0, 0, 0, 0}},
		{"short, foreign DCID", shortPacket(foreign), from, auditCounts{4, 4, 1, 0, 0, 0}},
		{"v1 Handshake, own DCID", longPacket(2, 1, own), from, auditCounts{5, 4, 1, 0, 0, 1}},
		{"v1 Handshake, foreign DCID", longPacket(2, 1, cidOf(0x98)), from, auditCounts{6, 4, 2, 0, 0, 2}},
		{"v1 Retry from a client, own DCID", longPacket(3, 1, own), from, auditCounts{7, 4, 3, 0, 0, 2}},
		{"version negotiation probe", longPacket(0, 0x1a2a3a4a, foreign), from, auditCounts{8, 4, 3, 1, 0, 2}},
		{"version 0 (version negotiation)", longPacket(0, 0, foreign), from, auditCounts{9, 4, 3, 2, 0, 2}},
		{"long header cut before the DCID length", []byte{0xc0, 0, 0, 0, 1}, from, auditCounts{10, 4, 3, 3, 0, 2}},
		{"v1 Initial, unowned DCID", longPacket(0, 1, cidOf(0x33)), from, auditCounts{11, 4, 3, 3, 1, 2}},
		{"v1 Initial, same unowned DCID again", longPacket(0, 1, cidOf(0x33)), from, auditCounts{12, 4, 3, 3, 2, 2}},
		{"v1 0-RTT, same unowned DCID", longPacket(1, 1, cidOf(0x33)), from, auditCounts{13, 4, 3, 3, 2, 2}},
		{"v1 0-RTT, another unowned DCID", longPacket(1, 1, cidOf(0x44)), from, auditCounts{14, 4, 3, 3, 2, 2}},
		{"v1 Initial, own DCID", longPacket(0, 1, own), from, auditCounts{15, 4, 3, 3, 3, 2}},
		{"v1 0-RTT, own DCID", longPacket(1, 1, own2), from, auditCounts{16, 4, 3, 3, 3, 2}},
		{"empty datagram", []byte{}, from, auditCounts{17, 4, 3, 3, 3, 2}},
	}
	for _, s := range steps {
		a.inspect(s.msg, s.addr)
		if got := countsOf(a); got != s.want {
			t.Fatalf("%s: counters %+v, want %+v", s.name, got, s.want)
		}
	}
	wantExamples := []string{
		"short:" + hex.EncodeToString(foreign),
		"handshake:" + hex.EncodeToString(cidOf(0x98)),
		"retry:" + hex.EncodeToString(own),
	}
	if !reflect.DeepEqual(a.examples, wantExamples) {
		t.Errorf("examples %q, want %q", a.examples, wantExamples)
	}
	wantUnowned := map[string]int{hex.EncodeToString(cidOf(0x33)): 3, hex.EncodeToString(cidOf(0x44)): 1}
	if !reflect.DeepEqual(a.unowned, wantUnowned) {
		t.Errorf("unownedInitial %v, want %v", a.unowned, wantUnowned)
	}
	// the connection's client saw own2 used, and its address change is logged once
	if st := a.clients["c1c2"]; st == nil || len(st.dcids) != 1 {
		t.Errorf("client c1c2: %+v", st)
	} else if _, ok := st.dcids[string(own2)]; !ok {
		t.Errorf("client c1c2: dcids %x", st.dcids)
	}
	if rec.lastAddr != moved.String() || len(logs) != 1 || !strings.Contains(logs[0], "-> "+moved.String()) {
		t.Errorf("address change: last %s, logs %q", rec.lastAddr, logs)
	}
	// what `stats` reports is these counters
	s := &server{audit: a}
	st := s.stats()["audit"].(map[string]any)
	if st["foreignCids"] != uint64(3) || st["shortHeader"] != uint64(4) || st["probes"] != uint64(3) {
		t.Errorf("stats %v", st)
	}
}

// TestAuditExamplesBound: at most maxExamples examples; every foreign datagram is still counted.
func TestAuditExamplesBound(t *testing.T) {
	a := NewAudit(func(string) {})
	a.cidLen = testCidLen
	for i := 0; i < maxExamples+5; i++ {
		a.inspect(shortPacket(cidOf(byte(i))), nil)
	}
	if a.foreign != maxExamples+5 || len(a.examples) != maxExamples {
		t.Fatalf("foreign %d, examples %d", a.foreign, len(a.examples))
	}
}

// TestAuditUnownedInitialBound: at most maxUnownedInitial (20000) distinct DCIDs; a known one keeps counting.
func TestAuditUnownedInitialBound(t *testing.T) {
	if maxUnownedInitial != 20_000 {
		t.Fatalf("maxUnownedInitial %d, the harness expects 20000", maxUnownedInitial)
	}
	a := NewAudit(func(string) {})
	a.cidLen = testCidLen
	dcid := func(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)+1) }
	for i := 0; i < maxUnownedInitial; i++ {
		a.inspect(longPacket(byte(i&1), 1, dcid(i)), nil)
	}
	if len(a.unowned) != maxUnownedInitial {
		t.Fatalf("%d unowned", len(a.unowned))
	}
	a.inspect(longPacket(0, 1, dcid(maxUnownedInitial)), nil) // one more: not remembered
	a.inspect(longPacket(1, 1, dcid(0)), nil)                 // a known one: counted
	if len(a.unowned) != maxUnownedInitial {
		t.Errorf("%d unowned after the bound", len(a.unowned))
	}
	if _, ok := a.unowned[hex.EncodeToString(dcid(maxUnownedInitial))]; ok {
		t.Errorf("a DCID past the bound was remembered")
	}
	if a.unsettled != 1 {
		t.Errorf("unsettled %d, want 1 (the datagram past the bound)", a.unsettled)
	}
	if n := a.unowned[hex.EncodeToString(dcid(0))]; n != 2 {
		t.Errorf("known DCID counted %d times, want 2", n)
	}
	if a.foreign != 0 || a.initial != maxUnownedInitial/2+1 {
		t.Errorf("foreign %d, initial %d", a.foreign, a.initial)
	}
}

func TestIDOfPrefix(t *testing.T) {
	cids := `"` + strings.Repeat("ab", 100) + `"`
	long := func(head string) []byte {
		var b bytes.Buffer
		b.WriteString(head)
		for b.Len() < maxIDPrefix+1000 {
			b.WriteString(cids + ",")
		}
		b.WriteString(cids + "]}")
		return b.Bytes()[:maxIDPrefix]
	}
	for _, c := range []struct {
		prefix []byte
		want   string // "" = nil
	}{
		{long(`{"id":42,"op":"issued","cids":[`), "42"},
		{long(`{ "id" : "r-7" , "op":"clients","cids":[`), `"r-7"`},
		{long(`{"op":"issued","id":9,"cids":[`), "9"},
		{long(`{"op":"issued","cids":[`), ""}, // "id" after the cut
		{long(`[1,2,`), ""},
		{[]byte(`{"id":12`), ""},    // cut inside the id
		{[]byte(`{"id":12}`), "12"}, // complete (not over-long, but the rule holds)
		{[]byte(`{"id"`), ""},
		{nil, ""},
	} {
		got := idOfPrefix(c.prefix)
		if string(got) != c.want {
			t.Errorf("%.40q...: id %q, want %q", c.prefix, got, c.want)
		}
		if got != nil {
			if _, err := json.Marshal(map[string]any{"id": got}); err != nil {
				t.Errorf("%s: %v", got, err)
			}
		}
	}
}

// TestAuditIssuedBound: at most maxIssued CIDs are remembered, oldest first out, and each one forgotten is counted.
func TestAuditIssuedBound(t *testing.T) {
	a := NewAudit(func(string) {})
	cid := func(i int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(i)+1) }
	for i := 0; i < maxIssued; i++ {
		a.minted(cid(i), false)
	}
	a.minted(cid(0), false) // minted again: still remembered, nothing forgotten
	if a.forgotten != 0 || len(a.issuedSet) != maxIssued {
		t.Fatalf("forgotten %d, remembered %d before the bound", a.forgotten, len(a.issuedSet))
	}
	a.minted(cid(maxIssued), false)
	a.minted(cid(maxIssued+1), false)
	if a.forgotten != 2 || len(a.issuedSet) != maxIssued {
		t.Errorf("forgotten %d, remembered %d, want 2 and %d", a.forgotten, len(a.issuedSet), maxIssued)
	}
	if _, ok := a.issuedSet[string(cid(0))]; ok {
		t.Errorf("the oldest CID is still remembered")
	}
	if _, ok := a.issuedSet[string(cid(maxIssued+1))]; !ok {
		t.Errorf("the newest CID is not remembered")
	}
}
