/*
 * dmp_sock.c - ZeroMQ socket helpers shared by the library, agent and CLI.
 *
 * Every dmp socket gets the same safe defaults (no linger, a frame limit,
 * routing-id handover off). CURVE servers always enforce ZAP in a
 * non-empty domain: libzmq accepts every client otherwise. Connecting
 * watches the socket monitor so that a refused key or a wrong server key
 * is reported at once instead of as a silent hang.
 */
#define _GNU_SOURCE
#include "dmp_impl.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* draft in libzmq 4.3's header */
#endif

int
dmp__sock_defaults(void *sock)
{
    int zero = 0;
    int64_t maxsize = DMP__WIRE_MAX;
    /* Reconnect after 50-150 ms, doubling up to 2 s: the first interval
     * randomized per socket, so that the clients of a restarted agent do
     * not all knock at once and then again in step (FAULTS.md: many
     * clients reconnecting). */
    static atomic_uint s_sockets;
    uint32_t h = ((uint32_t)getpid() * 2654435761u) ^
                 (uint32_t)dmp__now_ms() ^
                 (atomic_fetch_add(&s_sockets, 1) * 40503u);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    int ivl = 50 + (int)(h % 101), ivl_max = 2000;
    /* No high-water mark: a ROUTER silently drops what exceeds it, and a
     * child's output or exit must never be lost to a slow reader. Memory
     * is bounded by what peers are sent, not by the socket. */
    int hwm = 0;
    if (zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize) != 0 ||
        zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) != 0 ||
        zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max,
                       sizeof ivl_max) != 0)
        return -errno;
    return 0;
}

int
dmp__sock_curve_client(void *sock, const dmp__keypair_t *kp,
                       const char *server_pub_z85)
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pub_z85,
                       DMP__Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85,
                       DMP__Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85,
                       DMP__Z85_KEY_LEN) != 0)
        return -errno;
    return 0;
}

int
dmp__sock_curve_server(void *sock, const dmp__keypair_t *kp)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, DMP__ZAP_DOMAIN,
                       strlen(DMP__ZAP_DOMAIN)) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85,
                       DMP__Z85_KEY_LEN) != 0)
        return -errno;
    return 0;
}

int
dmp__sock_send(void *sock, const void *rid, size_t rid_len,
               const dmp__msg_t *msg, int flags)
{
    uint8_t *buf;
    size_t len;
    int rc = dmp__wire_encode(msg, &buf, &len);
    if (rc)
        return rc;
    if (rid && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | flags) < 0) {
        rc = -errno;
    } else if (zmq_send(sock, buf, len, flags) < 0) {
        rc = -errno;
    }
    dmp__free(buf);
    return rc;
}

/* Reads one monitor event; returns the event id or -1 on timeout. */
static int
s_monitor_event(void *mon, long timeout_ms, uint32_t *value)
{
    zmq_pollitem_t item = {mon, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return -1;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, mon, 0) < 0) {
        zmq_msg_close(&frame);
        return -1;
    }
    int event = -1;
    if (zmq_msg_size(&frame) >= 6) {
        const uint8_t *d = zmq_msg_data(&frame);
        uint16_t ev;
        memcpy(&ev, d, 2);
        memcpy(value, d + 2, 4);
        event = ev;
    }
    /* Drain the endpoint frame. */
    while (zmq_msg_more(&frame)) {
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, mon, 0) < 0)
            break;
    }
    zmq_msg_close(&frame);
    return event;
}

int
dmp__sock_connect_checked(void *ctx, void *sock, const char *endpoint,
                          double timeout, char *err, size_t errlen)
{
    static atomic_uint s_monitor_seq;
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://dmp-monitor-%u",
             atomic_fetch_add(&s_monitor_seq, 1));
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED;
    if (zmq_socket_monitor(sock, mon_ep, events) != 0)
        return -errno;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (!mon)
        return -errno;
    int rc = 0;
    if (zmq_connect(mon, mon_ep) != 0 || zmq_connect(sock, endpoint) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot connect to '%s': %s", endpoint,
                 zmq_strerror(errno));
        goto out;
    }
    double deadline = dmp__now() + timeout;
    bool tcp_connected = false;
    int failures = 0;
    rc = DMP_ENODE;
    for (;;) {
        double left = deadline - dmp__now();
        if (left <= 0)
            break;
        uint32_t value = 0;
        int ev = s_monitor_event(mon, dmp__timeout_ms(left), &value);
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            rc = 0;
            break;
        }
        if (ev == ZMQ_EVENT_CONNECTED)
            tcp_connected = true;
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            rc = DMP_EAUTH;
            snprintf(err, errlen,
                     "node at '%s' refused our key (status %u): is the "
                     "client's public key in the node's keys directory?",
                     endpoint, value);
            break;
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            /* One dropped handshake can be a race with a restarting
             * agent; two in a row mean the peer cannot decrypt us. */
            if (++failures < 2)
                continue;
            rc = DMP_ESERVERKEY;
            snprintf(err, errlen,
                     "handshake with '%s' failed: server identity mismatch "
                     "(wrong server key) or not a dmp node",
                     endpoint);
            break;
        }
    }
    if (rc == DMP_ENODE)
        snprintf(err, errlen, "cannot reach node at '%s': %s", endpoint,
                 tcp_connected ? "no handshake within the timeout"
                               : "connection refused or timed out");
out:
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(mon);
    return rc;
}
