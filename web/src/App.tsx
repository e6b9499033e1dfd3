import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { ApiError, checkKey } from "./api";
import { SessionContext, describe, makeSession } from "./session";
import { href, useRoute } from "./route";
import { NetworksPage } from "./pages/Networks";
import { NetworkPage } from "./pages/Network";
import { KeysPage } from "./pages/Keys";
import { PageBoundary } from "./ui";

export function App() {
  const [key, setKey] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const signOut = useCallback((reason?: string) => {
    setKey(null);
    setNotice(reason ?? "You are signed out. The admin key was forgotten by this page.");
  }, []);
  const session = useMemo(() => (key ? makeSession(key, signOut) : null), [key, signOut]);

  if (!session) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(k) => {
          setNotice(null);
          setKey(k);
        }}
      />
    );
  }
  return (
    <SessionContext.Provider value={session}>
      <Shell onSignOut={() => signOut()} />
    </SessionContext.Provider>
  );
}

function SignIn({ notice, onSignedIn }: { notice: string | null; onSignedIn: (key: string) => void }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    document.title = "Sign in · skymesh";
  }, []);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const key = value.trim();
    if (!key) {
      setError("Enter the admin key (admin_key in .skymesh/local.json, or the key your administrator gave you).");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await checkKey(key);
      setValue("");
      onSignedIn(key);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        setError(
          `That admin key was not accepted (${err.message}). Check that you copied the whole key, ` +
            "starting with skm_ak_ (locally: admin_key in .skymesh/local.json).",
        );
      } else {
        setError(describe(err));
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin">
      <h1>skymesh</h1>
      <p>Sign in with an admin key to see and run your mesh.</p>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={submit} aria-label="Sign in">
        <label htmlFor="admin-key">Admin key</label>
        <input
          id="admin-key"
          name="admin-key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          onChange={(e) => setValue(e.target.value)}
          aria-describedby={error ? "signin-error" : "signin-hint"}
          aria-invalid={error ? true : undefined}
        />
        <p id="signin-hint" className="hint">
          Kept in this tab's memory only: never saved, never in the address bar. Signing out or reloading forgets it.
        </p>
        {error && (
          <p id="signin-error" className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

function Shell({ onSignOut }: { onSignOut: () => void }) {
  const route = useRoute();
  const mainRef = useRef<HTMLElement>(null);
  useEffect(() => {
    mainRef.current?.focus(); // a screen reader starts at the new page's content
    document.title = `${route.page === "keys" ? "Enrollment keys" : route.page === "network" ? "Network" : "Networks"} · skymesh`;
  }, [route.page]);
  const current = route.page === "keys" ? "keys" : "networks";
  return (
    <>
      <header className="top">
        <a className="brand" href={href({ page: "networks" })}>
          skymesh
        </a>
        <nav aria-label="Main">
          <a href={href({ page: "networks" })} aria-current={current === "networks" ? "page" : undefined}>
            Networks
          </a>
          <a href={href({ page: "keys" })} aria-current={current === "keys" ? "page" : undefined}>
            Enrollment keys
          </a>
        </nav>
        <button type="button" className="secondary" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main ref={mainRef} tabIndex={-1}>
        <PageBoundary resetKey={window.location.hash}>
          {route.page === "networks" && <NetworksPage />}
          {route.page === "network" && <NetworkPage id={route.id} />}
          {route.page === "keys" && <KeysPage />}
        </PageBoundary>
      </main>
    </>
  );
}
