import { useState } from "react";
import { INTERNET, type Topology, type TopologyHost } from "../api";

// The network as a picture: hosts, gateways, relays and clients, the path each host's traffic takes
// and the links found down. Every path is the API's (GET …/topology: the plan, per host); this file
// only places the nodes and draws what it was told.

const W = 640;
const H = 600;
const CX = W / 2;
const CY = H / 2;
const NODE = 20;
/** Beyond this many hosts the full mesh of peer lines hides the paths: only paths are drawn. */
const MESH_LINES_UP_TO = 24;

type Point = { x: number; y: number };

function ring(ids: string[], radius: number, start = -Math.PI / 2): Map<string, Point> {
  const out = new Map<string, Point>();
  if (ids.length === 1 && radius < 150) {
    out.set(ids[0], { x: CX, y: CY });
    return out;
  }
  ids.forEach((id, i) => {
    const a = start + (2 * Math.PI * i) / ids.length;
    out.set(id, { x: CX + radius * Math.cos(a), y: CY + radius * Math.sin(a) });
  });
  return out;
}

/** Gateways and relays inside, the other hosts around them, each client just outside its gateway. */
function layout(t: Topology): Map<string, Point> {
  const byName = [...t.hosts].sort((a, b) => a.name.localeCompare(b.name));
  const vias = new Set(t.pairs.map((p) => p.via));
  const hub = (h: TopologyHost) => h.gateway !== null || h.relays.length > 0 || vias.has(h.host_id);
  const inner = byName.filter(hub).map((h) => h.host_id);
  const outer = byName.filter((h) => !hub(h)).map((h) => h.host_id);
  const pos =
    inner.length && outer.length
      ? new Map([...ring(inner, 110), ...ring(outer, 215, -Math.PI / 2 + Math.PI / Math.max(2, outer.length))])
      : ring([...inner, ...outer], 200);
  const perGateway = new Map<string, string[]>();
  for (const c of [...t.clients].sort((a, b) => a.name.localeCompare(b.name))) {
    perGateway.set(c.gateway, [...(perGateway.get(c.gateway) ?? []), c.id]);
  }
  for (const [gw, clients] of perGateway) {
    const at = pos.get(gw) ?? { x: CX, y: CY - 1 };
    const base = Math.atan2(at.y - CY, at.x - CX);
    clients.forEach((id, i) => {
      const a = base + (i - (clients.length - 1) / 2) * 0.35;
      pos.set(id, { x: CX + 272 * Math.cos(a), y: CY + 272 * Math.sin(a) });
    });
  }
  return pos;
}

/** A line from a to b that stops at the nodes' edges (so an arrow head is seen). */
function trimmed(a: Point, b: Point): { x1: number; y1: number; x2: number; y2: number } {
  const d = Math.hypot(b.x - a.x, b.y - a.y) || 1;
  const k = (NODE + 4) / d;
  return { x1: a.x + (b.x - a.x) * k, y1: a.y + (b.y - a.y) * k, x2: b.x - (b.x - a.x) * k, y2: b.y - (b.y - a.y) * k };
}

function destination(d: string): string {
  return d === INTERNET ? "internet" : d;
}

/** What one host's traffic does, in words: the same facts as the picture, for screen readers and small screens. */
export function pathsOf(h: TopologyHost, name: (id: string | null) => string): string[] {
  const out: string[] = [];
  if (h.relayed_by) out.push(`reaches everything through relay ${name(h.relayed_by)}`);
  for (const r of h.routes) {
    const via = r.next_hop && r.next_hop !== r.gateway ? ` via ${name(r.next_hop)}` : "";
    const ha = r.candidates.length > 1 ? ` (of ${r.candidates.map(name).join(", ")})` : "";
    out.push(`${destination(r.destination)} → ${r.gateway ? name(r.gateway) : "no gateway"}${via}${ha}`);
  }
  for (const v of h.via) if (v.next_hop !== h.relayed_by) out.push(`${name(v.to)} through ${name(v.next_hop)}`);
  if (h.down.length) out.push(`found down: ${h.down.map(name).join(", ")}`);
  return out;
}

export function NetworkGraph({ topology }: { topology: Topology }) {
  const [focus, setFocus] = useState("");
  const t = topology;
  if (!t.hosts.length) {
    return (
      <section aria-labelledby="graph-title" className="graph">
        <h2 id="graph-title">Network graph</h2>
        <p>No hosts yet: the graph shows them, their gateways, relays and clients once they join.</p>
      </section>
    );
  }
  const names = new Map<string, string>([
    ...t.hosts.map((h) => [h.host_id, h.name] as const),
    ...t.clients.map((c) => [c.id, c.name] as const),
  ]);
  const name = (id: string | null) => (id ? (names.get(id) ?? id) : "—");
  const pos = layout(t);
  const shown = t.hosts.filter((h) => !focus || h.host_id === focus);

  // Peer lines (each pair once), the paths of the hosts shown, clients to their gateways, down links.
  const mesh = new Map<string, [string, string]>();
  if (t.hosts.length <= MESH_LINES_UP_TO) {
    // As the API defines it: a host peers directly with every other member but those it reaches via another.
    for (const h of t.hosts) {
      const indirect = new Set(h.via.map((v) => v.to));
      for (const o of t.hosts) {
        if (o.host_id !== h.host_id && !indirect.has(o.host_id)) mesh.set([h.host_id, o.host_id].sort().join(" "), [h.host_id, o.host_id]);
      }
    }
  }
  const paths = new Map<string, [string, string]>();
  const hop = (a: string | null, b: string | null) => {
    if (a && b && a !== b && pos.has(a) && pos.has(b)) paths.set(`${a}>${b}`, [a, b]);
  };
  for (const h of shown) {
    hop(h.host_id, h.relayed_by);
    for (const r of h.routes) {
      hop(h.host_id, r.next_hop);
      hop(r.next_hop, r.gateway);
    }
    for (const v of h.via) {
      hop(h.host_id, v.next_hop);
      hop(v.next_hop, v.to);
    }
  }
  const down = t.down_links.filter((d) => pos.has(d.from) && pos.has(d.to) && (!focus || d.from === focus));
  const onPath = new Set([...paths.values()].flat());
  // The picture is cropped to its nodes (with room for their labels), so a small network is drawn large.
  const xs = [...pos.values()].map((p) => p.x);
  const ys = [...pos.values()].map((p) => p.y);
  const box = xs.length
    ? { x: Math.min(...xs) - 75, y: Math.min(...ys) - 40, w: Math.max(...xs) - Math.min(...xs) + 150, h: Math.max(...ys) - Math.min(...ys) + 105 }
    : { x: 0, y: 0, w: W, h: 120 };
  // …but never so small that one or two nodes fill the page: at least this much room around them.
  const [minW, minH] = [480, 330];
  if (box.w < minW) Object.assign(box, { x: box.x - (minW - box.w) / 2, w: minW });
  if (box.h < minH) Object.assign(box, { y: box.y - (minH - box.h) / 2, h: minH });

  const describe =
    `${t.hosts.length} hosts, ${t.hosts.filter((h) => h.gateway).length} gateways, ${t.clients.length} clients. ` +
    (paths.size ? `${paths.size} path segments drawn as arrows. ` : "Every host reaches its peers directly. ") +
    (down.length ? `${down.length} links found down, drawn dashed and marked down.` : "No links found down.");

  return (
    <section aria-labelledby="graph-title" className="graph">
      <h2 id="graph-title">Network graph</h2>
      <p className="hint">
        Arrows: where each host sends what leaves the network (its gateway, through its relay when it has one), as its
        plan says now, with the gateways its own probes found down skipped. Grey lines: direct WireGuard peers.
      </p>
      <div className="graph-controls">
        <label htmlFor="graph-focus">Show the paths of</label>
        <select id="graph-focus" value={focus} onChange={(e) => setFocus(e.target.value)}>
          <option value="">every host</option>
          {[...t.hosts]
            .sort((a, b) => a.name.localeCompare(b.name))
            .map((h) => (
              <option key={h.host_id} value={h.host_id}>
                {h.name}
              </option>
            ))}
        </select>
      </div>
      <svg viewBox={`${box.x} ${box.y} ${box.w} ${box.h}`} role="img" aria-labelledby="graph-title graph-desc" className="graph-svg">
        <desc id="graph-desc">{describe}</desc>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#0a58ca" />
          </marker>
        </defs>
        {[...mesh.values()].map(([a, b]) => (
          <line key={`m${a}${b}`} {...trimmed(pos.get(a)!, pos.get(b)!)} className="edge-peer" />
        ))}
        {t.clients.map((c) =>
          pos.has(c.gateway) ? (
            <line key={`c${c.id}`} {...trimmed(pos.get(c.id)!, pos.get(c.gateway)!)} className="edge-client" />
          ) : null,
        )}
        {[...paths.values()].map(([a, b]) => (
          <line key={`p${a}${b}`} {...trimmed(pos.get(a)!, pos.get(b)!)} className="edge-path" markerEnd="url(#arrow)" data-path={`${name(a)}>${name(b)}`} />
        ))}
        {down.map((d) => {
          const l = trimmed(pos.get(d.from)!, pos.get(d.to)!);
          return (
            <g key={`d${d.from}${d.to}`} data-down={`${name(d.from)}>${name(d.to)}`}>
              <line {...l} className="edge-down" />
              <text x={(l.x1 + l.x2) / 2} y={(l.y1 + l.y2) / 2 - 4} className="label-down" textAnchor="middle">
                ✕ down
              </text>
            </g>
          );
        })}
        {t.clients.map((c) => {
          const p = pos.get(c.id)!;
          return (
            <g key={c.id} data-node={c.name} className={c.served ? "node client" : "node client unserved"}>
              <rect x={p.x - 12} y={p.y - 12} width={24} height={24} rx={12} transform={`rotate(45 ${p.x} ${p.y})`} />
              <text x={p.x} y={p.y + 30} textAnchor="middle">
                {c.name}
              </text>
              <text x={p.x} y={p.y + 46} textAnchor="middle" className="sub">
                {c.served ? "client" : "client, not served"}
              </text>
            </g>
          );
        })}
        {t.hosts.map((h) => {
          const p = pos.get(h.host_id)!;
          const kind = [h.gateway ? "gateway" : "", h.relays.length ? "relay" : ""].filter(Boolean).join(", ");
          const cls = ["node", h.online ? "online" : "offline", h.gateway ? "gw" : "", onPath.has(h.host_id) ? "on-path" : ""];
          return (
            <g key={h.host_id} data-node={h.name} className={cls.filter(Boolean).join(" ")}>
              {h.gateway ? (
                <rect x={p.x - NODE} y={p.y - NODE} width={2 * NODE} height={2 * NODE} rx={6} />
              ) : (
                <circle cx={p.x} cy={p.y} r={NODE} />
              )}
              <text x={p.x} y={p.y + 5} textAnchor="middle" className="initial">
                {h.online ? "●" : "○"}
              </text>
              <text x={p.x} y={p.y + NODE + 17} textAnchor="middle">
                {h.name}
              </text>
              <text x={p.x} y={p.y + NODE + 33} textAnchor="middle" className="sub">
                {[kind, h.online ? "online" : "offline"].filter(Boolean).join(" · ")}
              </text>
            </g>
          );
        })}
      </svg>
      <ul className="legend" aria-label="Legend">
        <li><span className="key key-path" aria-hidden="true" /> path a host's traffic takes (arrow)</li>
        <li><span className="key key-peer" aria-hidden="true" /> direct WireGuard peers</li>
        <li><span className="key key-down" aria-hidden="true" /> link found down (dashed, “✕ down”)</li>
        <li><span className="key key-client" aria-hidden="true" /> client to its gateway (dotted)</li>
        <li>square: gateway · circle: host · diamond: client · ● online · ○ offline</li>
      </ul>
      <h3 id="paths-title">Paths in words</h3>
      <ul className="paths" aria-labelledby="paths-title">
        {shown
          .slice()
          .sort((a, b) => a.name.localeCompare(b.name))
          .map((h) => {
            const said = pathsOf(h, name);
            return (
              <li key={h.host_id} data-paths={h.name}>
                <strong>{h.name}</strong>: {said.length ? said.join("; ") : "every peer directly"}
              </li>
            );
          })}
      </ul>
    </section>
  );
}
