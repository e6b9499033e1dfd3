import { useState, type FormEvent } from "react";
import {
  ApiError,
  type Client,
  type Gateway,
  type GatewayGroup,
  type GroupChanged,
  type Host,
  type MemberRemoved,
  type RotationRequested,
} from "../api";
import { describe, useSession } from "../session";
import { CardTable, ConfirmButton, ErrorBox, Listing, REFRESH_MS, type Loaded, useAction } from "../ui";

// HA gateway groups (issue 11): members share one WireGuard identity and a floating endpoint; one
// member is active. Everything shown is the API's answer (GET …/gateway-groups, polled like the
// other live lists), so a failover (a new active member) appears without a reload.

type Props = {
  base: string;
  groups: Loaded<GatewayGroup[]>;
  gateways: Gateway[];
  hosts: Host[];
  clients: Client[] | null;
};

export function GatewayGroups({ base, groups, gateways, hosts, clients }: Props) {
  const names = new Map(hosts.map((h) => [h.id, h.name]));
  const nameOf = (id: string) => names.get(id) ?? id;
  const remote = gateways.filter((g) => g.remote_access);
  return (
    <>
      <h2 id="groups-title">Gateway groups</h2>
      <p className="hint">
        A gateway group serves remote-access clients from 1 to 4 gateways that share one WireGuard identity and a
        floating endpoint: one member is active, another takes over within seconds when it fails. Refreshed every{" "}
        {REFRESH_MS / 1000} s.
      </p>
      <CreateGroup base={base} gateways={remote} onCreated={groups.reload} />
      <Listing loaded={groups} noun="gateway groups" empty={<p>No gateway groups in this network.</p>}>
        {(items) => (
          <div className="groups">
            {items.map((g) => (
              <GroupCard
                key={g.id}
                base={base}
                group={g}
                nameOf={nameOf}
                gateways={remote}
                clients={clients?.filter((c) => c.gateway === g.id) ?? null}
                onChanged={groups.reload}
              />
            ))}
          </div>
        )}
      </Listing>
    </>
  );
}

function CreateGroup({ base, gateways, onCreated }: { base: string; gateways: Gateway[]; onCreated: () => void }) {
  const { api } = useSession();
  const [name, setName] = useState("");
  // In the order they were ticked: that is the priority (first = preferred).
  const [members, setMembers] = useState<string[]>([]);
  const [floating, setFloating] = useState("");
  const [done, setDone] = useState("");
  const { error, setError, busy, run } = useAction();

  if (gateways.length === 0) {
    return <p>A gateway group is made of remote-access gateways: make at least one host a gateway above first.</p>;
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    setDone("");
    if (members.length === 0) {
      setError("Tick at least one member: the gateways that serve the group's clients.");
      return;
    }
    await run(async () => {
      const g = await api<GatewayGroup>("POST", `${base}/gateway-groups`, {
        name: name.trim(),
        members,
        floating_endpoint: floating.trim(),
      });
      setDone(`Created group ${g.name}. Its first member makes the group's key once its agent runs.`);
      setName("");
      setMembers([]);
      setFloating("");
      onCreated();
    });
  }

  const toggle = (id: string, on: boolean) => setMembers((m) => (on ? [...m.filter((x) => x !== id), id] : m.filter((x) => x !== id)));
  return (
    <form className="panel" onSubmit={submit} aria-labelledby="create-group-title">
      <h3 id="create-group-title">Create a gateway group</h3>
      <div className="fields">
        <div>
          <label htmlFor="group-name">Group name</label>
          <input id="group-name" required value={name} onChange={(e) => setName(e.target.value)} placeholder="edge" />
        </div>
        <div>
          <label htmlFor="group-floating">Floating endpoint (address:port)</label>
          <input
            id="group-floating"
            required
            value={floating}
            onChange={(e) => setFloating(e.target.value)}
            placeholder="198.51.100.10:51900"
            aria-describedby="group-floating-hint"
          />
          <p id="group-floating-hint" className="hint">
            The address the active member takes over (an IP literal) and a port that is not the mesh's.
          </p>
        </div>
      </div>
      <fieldset>
        <legend>Members, in priority order (the first you tick is preferred)</legend>
        {gateways.map((g) => {
          const at = members.indexOf(g.host_id);
          return (
            <label className="check" key={g.host_id}>
              <input type="checkbox" checked={at >= 0} onChange={(e) => toggle(g.host_id, e.target.checked)} />
              {g.name}
              {at >= 0 && <span className="hint">(priority {at + 1})</span>}
            </label>
          );
        })}
      </fieldset>
      <ErrorBox error={error} />
      <p className="status" role="status">
        {done}
      </p>
      <button type="submit" disabled={busy}>
        {busy ? "Creating…" : "Create group"}
      </button>
    </form>
  );
}

/** What the card says after an action: the API's message, and whether rotate-key is the next step. */
type Said = { text: string; rotate: boolean };

function GroupCard({
  base,
  group: g,
  nameOf,
  gateways,
  clients,
  onChanged,
}: {
  base: string;
  group: GatewayGroup;
  nameOf: (id: string) => string;
  gateways: Gateway[];
  clients: Client[] | null;
  onChanged: () => void;
}) {
  const { api } = useSession();
  const [said, setSaid] = useState<Said | null>(null);
  const [adding, setAdding] = useState("");
  const { error, setError, busy, run } = useAction();
  const path = `${base}/gateway-groups/${encodeURIComponent(g.id)}`;
  const titleId = `group-${g.id}-title`;
  const candidates = gateways.filter((x) => !g.members.includes(x.host_id));
  const served = clients ?? [];

  async function patch(body: Record<string, unknown>) {
    await run(async () => {
      setSaid(null);
      await api<GroupChanged>("PATCH", path, body);
      onChanged();
    });
  }

  async function remove(hostId: string) {
    await run(async () => {
      setSaid(null);
      const r = await api<MemberRemoved>("DELETE", `${path}/members/${encodeURIComponent(hostId)}`);
      // The API's own sentence says whether it still knows the key; the host's name is put in for its id.
      setSaid({ text: r.message.split(r.host_id).join(nameOf(r.host_id)), rotate: r.still_knows_key });
      onChanged();
    });
  }

  async function rotate() {
    await run(async () => {
      setSaid(null);
      const r = await api<RotationRequested>("POST", `${path}/rotate-key`);
      const who = served.length ? served.map((c) => c.name).join(", ") : "none yet";
      setSaid({
        text:
          `${nameOf(r.maker)} makes key version ${r.version}. Once the group shows key version ${r.version}, every ` +
          `client file of this group must be downloaded again: its [Peer] PublicKey changes (clients keep their own ` +
          `keys), and old files stop connecting. Clients of this group: ${who}. Removed members no longer know the new key.`,
        rotate: false,
      });
      onChanged();
    });
  }

  async function del() {
    setSaid(null);
    setError(null);
    try {
      await api("DELETE", path);
      onChanged();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && e.code === "group_in_use") {
        setError(
          `${e.message}. In this dashboard: delete those clients under "Remote-access clients" below (or move them to ` +
            "another gateway with the API or CLI), then delete the group again.",
        );
      } else {
        setError(describe(e));
      }
    }
  }

  function move(id: string, by: number) {
    const order = [...g.members];
    const at = order.indexOf(id);
    const to = at + by;
    if (at < 0 || to < 0 || to >= order.length) return;
    [order[at], order[to]] = [order[to], order[at]];
    return patch({ priority: order });
  }

  return (
    <article className="panel" data-group={g.name} aria-labelledby={titleId}>
      <h3 id={titleId}>Group {g.name}</h3>
      <dl className="facts">
        <div>
          <dt>Active member</dt>
          <dd data-fact="active">
            {g.active ? (
              <>
                <strong>{nameOf(g.active)}</strong> (epoch {g.epoch})
              </>
            ) : g.epoch ? (
              `none now (epoch ${g.epoch}): waiting for a member to take over`
            ) : (
              "none yet: no member has taken over"
            )}
          </dd>
        </div>
        <div>
          <dt>Floating endpoint</dt>
          <dd>{g.floating_endpoint}</dd>
        </div>
        <div>
          <dt>Key</dt>
          <dd data-fact="key">{keyState(g, nameOf)}</dd>
        </div>
        <div>
          <dt>Id</dt>
          <dd>
            <code>{g.id}</code>
          </dd>
        </div>
      </dl>
      {g.key && g.key.still_know.length > 0 && (
        <div className="notice" data-fact="still-know">
          <p>
            Removed from the group but still knowing its private key: {g.key.still_know.map(nameOf).join(", ")}. Until you
            rotate the key, they could pose as this group to its clients.
          </p>
          {!g.key_rotation_requested && (
            <button type="button" onClick={rotate} disabled={busy}>
              Rotate the key of {g.name} now
            </button>
          )}
        </div>
      )}
      <CardTable caption={`Members of group ${g.name}, in priority order`} columns={["Priority", "Member", "Role", "Key", "Actions"]}>
        {g.members.map((m, i) => (
          <tr key={m} data-member={nameOf(m)}>
            <td data-label="Priority">{i + 1}</td>
            <th scope="row" data-label="Member">
              {nameOf(m)}
            </th>
            <td data-label="Role">
              <span className={g.active === m ? "badge online" : "badge offline"}>{g.active === m ? "Active" : "Standby"}</span>
            </td>
            <td data-label="Key">{memberKey(g, m)}</td>
            <td data-label="Actions">
              <span className="row">
                <button
                  type="button"
                  className="secondary"
                  disabled={busy || i === 0}
                  aria-label={`Move ${nameOf(m)} up in the priority of group ${g.name}`}
                  onClick={() => move(m, -1)}
                >
                  Up
                </button>
                <button
                  type="button"
                  className="secondary"
                  disabled={busy || i === g.members.length - 1}
                  aria-label={`Move ${nameOf(m)} down in the priority of group ${g.name}`}
                  onClick={() => move(m, 1)}
                >
                  Down
                </button>
                <ConfirmButton
                  text="Remove"
                  label={`Remove ${nameOf(m)} from group ${g.name}`}
                  question={`Remove ${nameOf(m)} from ${g.name}?`}
                  confirmLabel="Remove"
                  onConfirm={() => remove(m)}
                />
              </span>
            </td>
          </tr>
        ))}
      </CardTable>
      <p data-fact="clients">
        Clients served:{" "}
        {clients === null ? "not known yet" : served.length ? served.map((c) => `${c.name} (${c.connected ? "connected" : "not connected"})`).join(", ") : "none"}
      </p>
      {said && (
        <p className="notice" role="status">
          {said.text.replace(/\.?$/, ".")}
          {said.rotate && ` Use "Rotate the key of ${g.name} now" above to end that.`}
        </p>
      )}
      <ErrorBox error={error} />
      <div className="row">
        {candidates.length > 0 && (
          <>
            <label htmlFor={`group-${g.id}-add`} className="sr-only">
              Gateway to add to group {g.name}
            </label>
            <select id={`group-${g.id}-add`} value={adding} onChange={(e) => setAdding(e.target.value)} className="narrow">
              <option value="">Add a member…</option>
              {candidates.map((c) => (
                <option key={c.host_id} value={c.host_id}>
                  {c.name}
                </option>
              ))}
            </select>
            <button
              type="button"
              className="secondary"
              disabled={busy || !adding}
              onClick={async () => {
                await patch({ add: [adding] });
                setAdding("");
              }}
            >
              Add member
            </button>
          </>
        )}
        {g.key && (
          <ConfirmButton
            text="Rotate key"
            label={`Rotate key of group ${g.name}`}
            question={`Make a new key for ${g.name}? Every client file of the group must then be downloaded again.`}
            confirmLabel="Rotate key"
            onConfirm={rotate}
          />
        )}
        <ConfirmButton
          text="Delete group"
          label={`Delete group ${g.name}`}
          question={`Delete group ${g.name}?`}
          confirmLabel="Delete"
          onConfirm={del}
        />
      </div>
    </article>
  );
}

/** The group's key in words: none yet (who makes it), its version, a rotation under way. */
function keyState(g: GatewayGroup, nameOf: (id: string) => string): string {
  if (!g.public_key || !g.key) {
    return (
      `No key yet: waiting for a member to make the key (${nameOf(g.members[0])}, the first by priority, makes it ` +
      "when its agent runs). Clients can be added once it exists."
    );
  }
  const waiting = g.key.pending.length + g.key.stale.length;
  let text = `Version ${g.key_version}; ${g.key.current.length} of ${g.members.length} members hold it`;
  if (waiting) text += `, ${waiting} waiting for a copy`;
  text += ".";
  if (g.key_rotation_requested) text += ` A new key (version ${g.key_rotation_requested}) was asked for: waiting for a member to make it.`;
  return text;
}

/** One member's copy of the key, plainly. */
function memberKey(g: GatewayGroup, member: string): string {
  const k = g.key;
  if (!k) return "no key yet";
  if (k.current.includes(member)) return `holds the key (version ${g.key_version})`;
  if (k.stale.includes(member)) return "its copy was sealed to an old WireGuard key of this host: waiting for a new copy";
  if (k.pending.includes(member)) return "waiting for a copy of the key from a member";
  return "—";
}
