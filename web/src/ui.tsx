import { Component, useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { describe } from "./session";

/** How often a page that shows live state (hosts, gateways, clients) fetches it again. */
export const REFRESH_MS = 3000;

/** An error a person can act on, announced to screen readers. */
export function ErrorBox({ error, onRetry }: { error: string | null; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      <p>{error}</p>
      {onRetry && (
        <button type="button" className="secondary" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export type Loaded<T> = {
  data: T | null;
  error: string | null;
  loading: boolean;
  updatedAt: Date | null;
  reload: () => void;
};

/**
 * Loads `load()` at once and, with `everyMs`, again every that many milliseconds while the
 * page is shown. A failed refresh keeps the last data on screen and says what failed.
 */
export function useLoaded<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [updatedAt, setUpdatedAt] = useState<Date | null>(null);
  const generation = useRef(0);
  const inFlight = useRef(false);
  const run = useCallback(load, deps);

  const reload = useCallback(() => {
    const mine = ++generation.current;
    inFlight.current = true;
    setLoading(true);
    run().then(
      (d) => {
        if (mine !== generation.current) return;
        inFlight.current = false;
        setData(d);
        setError(null);
        setUpdatedAt(new Date());
        setLoading(false);
      },
      (e) => {
        if (mine !== generation.current) return;
        inFlight.current = false;
        setError(describe(e));
        setLoading(false);
      },
    );
  }, [run]);

  useEffect(() => {
    setData(null);
    reload();
    if (!everyMs) return () => void ++generation.current;
    // A slow API is not asked again while it still answers the last refresh.
    const timer = window.setInterval(() => inFlight.current || reload(), everyMs);
    return () => {
      window.clearInterval(timer);
      ++generation.current;
    };
  }, [reload, everyMs]);

  return { data, error, loading, updatedAt, reload };
}

/** "12 s ago", "3 min ago", "2 h ago", "5 d ago"; the exact time goes in a title. */
export function ago(iso: string | null, now: Date = new Date()): string {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now.getTime() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function Time({ iso }: { iso: string | null }) {
  if (!iso) return <span>never</span>;
  return (
    <time dateTime={iso} title={new Date(iso).toLocaleString()}>
      {ago(iso)}
    </time>
  );
}

/** Copies `text`; says so in a live region. Falls back to selecting the text field `fallbackId`. */
export function CopyButton({ text, label, fallbackId }: { text: string; label: string; fallbackId: string }) {
  const [said, setSaid] = useState("");
  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setSaid("Copied to the clipboard.");
    } catch {
      const field = document.getElementById(fallbackId) as HTMLInputElement | null;
      field?.focus();
      field?.select();
      setSaid("Could not reach the clipboard: the text is selected, press Ctrl+C (⌘C) to copy it.");
    }
  }
  return (
    <>
      <button type="button" onClick={copy} aria-label={label}>
        Copy
      </button>
      <span className="status" role="status" aria-live="polite">
        {said}
      </span>
    </>
  );
}

/** A delete button that asks once more before acting, in the page (no browser dialog). */
export function ConfirmButton({
  text,
  label,
  question,
  confirmLabel,
  onConfirm,
}: {
  /** What the button shows. */
  text: string;
  /** What a screen reader says: the action and what it acts on. */
  label: string;
  question: string;
  confirmLabel: string;
  onConfirm: () => Promise<void> | void;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking) {
    return (
      <button type="button" className="danger" aria-label={label} onClick={() => setAsking(true)}>
        {text}
      </button>
    );
  }
  return (
    <span className="confirm" role="group" aria-label={question}>
      <span>{question}</span>
      <button
        type="button"
        className="danger"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            await onConfirm();
          } finally {
            setBusy(false);
            setAsking(false);
          }
        }}
      >
        {confirmLabel}
      </button>
      <button type="button" className="secondary" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

/**
 * A list loaded from the API: "Loading…", its error (with a retry; the last data stays on
 * screen after a failed refresh), `empty` when there is nothing, else `children(items)`.
 */
export function Listing<T>({
  loaded,
  noun,
  empty,
  children,
}: {
  loaded: Loaded<T[]>;
  noun: string;
  empty: ReactNode;
  children: (items: T[]) => ReactNode;
}) {
  const { data, error, reload } = loaded;
  return (
    <>
      <ErrorBox
        error={error && (data ? `Showing the ${noun} as they were at the last refresh. ${error}` : error)}
        onRetry={reload}
      />
      {data === null && !error && <p aria-busy="true">Loading {noun}…</p>}
      {data?.length === 0 && empty}
      {data && data.length > 0 && children(data)}
    </>
  );
}

/** A table that becomes one card per row at a phone's width (each cell labelled by data-label). */
export function CardTable({ caption, columns, children }: { caption: string; columns: string[]; children: ReactNode }) {
  return (
    <table className="cards">
      <caption className="sr-only">{caption}</caption>
      <thead>
        <tr>
          {columns.map((c) => (
            <th scope="col" key={c}>
              {c === "Actions" ? <span className="sr-only">Actions</span> : c}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  );
}

/**
 * What a form's submit does: `run(work)` marks it busy, clears the last error, and turns
 * whatever `work` throws into `error`, a message for the person (shown by ErrorBox).
 */
export function useAction() {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const run = useCallback(async (work: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await work();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  }, []);
  return { error, setError, busy, run };
}

/**
 * A page that throws while it renders (an answer it did not expect) shows what happened and
 * how to go on, instead of leaving the whole dashboard blank. `resetKey` changing (the next
 * page) tries again.
 */
export class PageBoundary extends Component<{ resetKey: string; children: ReactNode }, { failed: string | null }> {
  state = { failed: null as string | null };

  static getDerivedStateFromError(e: unknown) {
    return { failed: String(e) };
  }

  componentDidUpdate(previous: { resetKey: string }) {
    if (previous.resetKey !== this.props.resetKey && this.state.failed) this.setState({ failed: null });
  }

  render() {
    if (!this.state.failed) return this.props.children;
    return (
      <div className="error" role="alert">
        <p>
          This page could not be shown: the API's answer was not what this dashboard expects ({this.state.failed}). The
          dashboard may be older than the API: reload the page; if it happens again, report it with this text.
        </p>
        <button type="button" className="secondary" onClick={() => this.setState({ failed: null })}>
          Try again
        </button>
      </div>
    );
  }
}
