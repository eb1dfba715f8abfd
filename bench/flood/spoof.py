#!/usr/bin/env python3
"""Spoofed-source UDP flood on loopback (raw socket, IP_HDRINCL): every datagram comes from a new random
127.0.0.0/8 address and port, so each one is a new client 4-tuple for the load balancer. Loopback only; needs
CAP_NET_RAW (run it inside a network namespace the caller created: unshare -rn / unshare -n).

usage: spoof.py TARGET_IP TARGET_PORT COUNT RATE_PER_S [SIZE]
Payload: a QUIC v1 Initial-shaped long header with random 8-byte DCID and SCID, padded to SIZE (default 1200).
Prints one JSON line: {"sent": n, "seconds": s}.
"""
import json, os, random, socket, struct, sys, time

def checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff

def main() -> None:
    target, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 1200
    if not target.startswith('127.'):
        sys.exit('loopback targets only')
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    dst = socket.inet_aton(target)
    start = time.monotonic()
    sent = 0
    while sent < count:
        src = bytes([127, random.randint(1, 254), random.randint(0, 255), random.randint(1, 254)])
        sport = random.randint(1024, 65535)
        payload = bytearray(size)
        payload[0] = 0xc0
        payload[1:5] = b'\x00\x00\x00\x01'
        payload[5] = 8
        payload[6:14] = os.urandom(8)
        payload[14] = 8
        payload[15:23] = os.urandom(8)
        payload[-8:] = os.urandom(8)
        udp_len = 8 + size
        udp = struct.pack('!HHHH', sport, port, udp_len, 0) + bytes(payload)  # checksum 0: none (IPv4)
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + udp_len, random.randint(0, 65535), 0, 64, socket.IPPROTO_UDP, 0, src, dst)
        ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
        s.sendto(ip + udp, (target, 0))
        sent += 1
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0.002:
                time.sleep(ahead)
    print(json.dumps({'sent': sent, 'seconds': round(time.monotonic() - start, 3)}))

if __name__ == '__main__':
    main()
