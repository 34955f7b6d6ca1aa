"""Credentials never shown: a store URL's password (in its userinfo or a query parameter)
is masked in reprs, log lines and error messages, for refused URLs, failed connections
and a manager running on PostgreSQL. The ``wm-async`` command's output is tested in
test_cli.py."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import pytest
from conftest import PG_DSN, PgSchema, require_postgres
from hypothesis import given
from hypothesis import strategies as st

import wm_async as wm
from wm_async._core.redact import (
    mask_text,
    mask_url,
)
from wm_async.stores import open_store


def _secret() -> str:
    """A password no message could contain by chance."""
    return f"pw-{uuid.uuid4().hex[:12]}"


def with_secrets(dsn: str, *, password: str, query_password: str, ssl_password: str) -> str:
    """``dsn`` with a password in its userinfo (unless it has one: the server's own then
    stays, as the test's secret) and ``?password=`` and ``?sslpassword=`` parameters
    (which asyncpg ignores when the userinfo has a password, or without a key file)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if parts.password is None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user or 'postgres'}:{quote(password, safe='')}@{host}"
    query = f"password={query_password}&sslpassword={ssl_password}"
    query = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _all_text(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` shows (its message, its cause's), and its
    ``value`` if it has one."""
    shown = "".join(traceback.format_exception(exc)) + repr(exc)
    return shown + repr(getattr(exc, "value", ""))


# -- the masking itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:s3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***"),
        (
            "postgresql://u@h:5432/db?sslpassword=s3cret&application_name=app&sslmode=require",
            "postgresql://u@h:5432/db?sslpassword=***&application_name=app&sslmode=require",
        ),
        (
            "postgres://u:a@h1:5432,h2:5433/db?PassWord=b&schema=q&api_key=c&sslkey=/k.pem",
            "postgres://u:***@h1:5432,h2:5433/db?PassWord=***&schema=q&api_key=***&sslkey=***",
        ),
        ("postgresql://u:pw@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u:s3%40cr%2Fet@h/db", "postgresql://u:***@h/db"),  # percent-encoded
        # Malformed: a raw "@", "/", "?", "#" or blank in the password is masked whole.
        ("postgresql://u:s3@cr@et@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3/cr@et@h/db?x=1", "postgresql://u:***@h/db?x=1"),
        ("postgresql://u:s3?cr#et@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:my pass@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cret@[bad", "postgresql://u:***@[bad"),
        ("postgresql://u@h/db?password=a#b", "postgresql://u@h/db?password=***"),
        ("mysql://u:s3cret@h/db", "mysql://u:***@h/db"),
        # Nothing secret: unchanged.
        ("postgresql://u@h/db?application_name=me@home", None),
        ("postgresql://u:@h/db", None),
        ("postgresql://[::1]:5432/db", None),
        ("sqlite:///data/a:b@c.db", None),
        ("sqlite:///wm_async.db", None),
        ("memory://", None),
        ("", None),
        ("://", None),
        ("not a url", None),
        ("not a url, password=s3cret", "not a url, password=***"),
    ],
)
def test_mask_url_masks_each_secret_and_keeps_the_rest(url: str, masked: str | None) -> None:
    assert mask_url(url) == (url if masked is None else masked)


def test_mask_text_masks_urls_pairs_and_the_known_secrets_in_free_text() -> None:
    dsn = "postgresql://u:s3cr%2Fet@h/db?sslpassword=t0ken"
    message = (
        f"connect failed ({dsn} refused) password='x y' token=abc, key = 5; "
        "the server said: bad password s3cr/et; also t0ken; application_name=app"
    )

    assert mask_text(message, secrets_of=dsn) == (
        "connect failed (postgresql://u:***@h/db?sslpassword=*** refused) password=*** "
        "token=***, key = ***; the server said: bad password ***; also ***; "
        "application_name=app"
    )


@given(
    st.text(st.characters(exclude_characters="@"), min_size=1),
    st.text(st.characters(exclude_characters="&"), min_size=1),
)
def test_any_password_is_masked_whole(password: str, query_password: str) -> None:
    # Raw characters that break a URL ("/", "?", "#", ":", blanks) included: the user
    # may not have percent-encoded them.
    url = f"postgresql://user:{password}@host/db?schema=s&password={query_password}&x=1"

    assert mask_url(url) == "postgresql://user:***@host/db?schema=s&password=***&x=1"


@given(st.text())
def test_masking_never_raises(text: str) -> None:
    mask_text(text, secrets_of=text)
    mask_url(text)
    mask_url("postgresql://" + text)


# -- refused URLs, and accepted ones ------------------------------------------------------

SECRET = "s3cret-ZQ81"

URLS = [
    f"mysql://u:{SECRET}@h/db",  # an unknown scheme
    f"postgresql:/u:{SECRET}@h/db",  # "//" missing: not a URL
    f"postgresql://u:{SECRET}@[bad/db",  # urlsplit refuses it
    f"postgresql://u:{SECRET}\uff03@h/db",  # urlsplit's own message quotes the netloc
    f"postgresql://u:{SECRET}@h/db",  # accepted: shown masked
    f"postgresql://u@h/db?password={SECRET}&sslpassword={SECRET}",
    f"memory://u:{SECRET}@x",
]


@pytest.mark.parametrize("url", URLS)
def test_a_store_url_is_never_shown_with_its_password(url: str) -> None:
    pytest.importorskip("asyncpg")
    from wm_async.stores.postgres import PostgresStore

    for make in (open_store, PostgresStore, lambda u: wm.WorkManager(store=u)):
        shown = _shown_by(make, url)
        assert SECRET not in shown, (make, shown)
        assert "***" in shown or url.startswith("memory:"), shown  # memory:// shows no URL


def _shown_by(make: Callable[[str], object], url: str) -> str:
    """What ``make(url)`` shows: its result's repr, or all of the error refusing it."""
    try:
        made = make(url)
    except wm.InvalidRequestError as exc:
        return _all_text(exc)
    return repr(made)


# -- PostgreSQL: a running manager, a failed connection --------------------------------------


@pytest.fixture
async def pg_schema() -> AsyncIterator[PgSchema]:
    await require_postgres()
    schema = PgSchema()
    try:
        yield schema
    finally:
        await schema.drop()


@pytest.mark.postgres
async def test_a_manager_on_postgres_shows_no_password(
    pg_schema: PgSchema, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = [_secret() for _ in range(3)]
    url = with_secrets(
        pg_schema.url(),
        password=secrets[0],
        query_password=secrets[1],
        ssl_password=secrets[2],
    )
    if (known := urlsplit(PG_DSN).password) is not None:
        secrets[0] = known  # the server's password, kept in the URL
    caplog.set_level(logging.DEBUG, logger="wm_async")
    manager = wm.WorkManager(store=url, shutdown_grace=0)
    manager.register_worker("w", lambda ctx: None)
    shown = [repr(manager), repr(manager.store)]
    with pytest.raises(wm.StoreError) as not_open:
        await manager.store.get(["x"])  # the store is not open yet: its repr is in the error
    shown.append(str(not_open.value))

    with anyio.fail_after(30):
        async with manager:
            request = wm.OneTimeWorkRequest("w")
            await manager.enqueue(request)
            info = await manager.wait(request.id)
            shown.append(repr(manager))

    assert info.state is wm.WorkState.SUCCEEDED
    assert "WorkManager started (store=PostgresStore('postgresql://" in caplog.text
    assert ":***@" in caplog.text
    assert "password=***&sslpassword=***" in caplog.text
    # The rest stays readable.
    assert f"application_name={pg_schema.app}&" in caplog.text
    assert f"schema='{pg_schema.name}'" in caplog.text
    everything = "\n".join([*shown, caplog.text])
    for secret in secrets:
        assert secret not in everything


@pytest.mark.postgres
async def test_a_failed_connection_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("asyncpg")
    from wm_async.stores.postgres import PostgresStore

    await require_postgres()
    secrets = [_secret() for _ in range(3)]
    url = with_secrets(
        "postgresql://postgres@127.0.0.1:1/test",  # nothing listens on port 1
        password=secrets[0],
        query_password=secrets[1],
        ssl_password=secrets[2],
    )
    caplog.set_level(logging.DEBUG, logger="wm_async")
    store = PostgresStore(url, retry_timeout=0.2)

    with anyio.fail_after(30), pytest.raises(wm.StoreError) as info:
        await store.open()

    assert "connecting failed" in str(info.value)
    everything = _all_text(info.value) + caplog.text
    for secret in secrets:
        assert secret not in everything


@pytest.mark.postgres
async def test_a_driver_message_quoting_the_dsn_is_masked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncpg 0.32 quotes neither the DSN nor the password in its errors; another version
    # might (as the standard library's urlsplit does): the store masks whatever it shows.
    asyncpg = pytest.importorskip("asyncpg")
    from wm_async.stores.postgres import PostgresStore

    secret = _secret()
    url = f"postgresql://postgres:{quote(secret + '/x', safe='')}@127.0.0.1:1/test"

    async def create_pool(dsn: str, **kwargs: object) -> object:
        decoded = secret + "/x"
        raise asyncpg.ClientConfigurationError(f"cannot use {dsn}: bad password {decoded!r}")

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)  # as postgres.py calls it
    caplog.set_level(logging.DEBUG, logger="wm_async")

    with anyio.fail_after(30), pytest.raises(wm.StoreError) as info:
        await PostgresStore(url).open()

    message = str(info.value)
    assert "cannot use postgresql://postgres:***@127.0.0.1:1/test: bad password '***'" in message
    assert secret not in message + caplog.text


@pytest.mark.postgres
async def test_the_change_feed_masks_a_failed_connection_in_its_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from wm_async.stores._postgres_listen import ChangeFeed

    secret = _secret()
    url = f"postgresql://postgres@127.0.0.1:1/test?sslpassword={secret}"

    async def connect(dsn: str, **kwargs: object) -> object:
        raise asyncpg.ClientConfigurationError(f"cannot use {dsn}")

    async def changed(ids: Sequence[str] | None) -> None:
        pass

    monkeypatch.setattr(asyncpg, "connect", connect)  # as _postgres_listen.py calls it
    caplog.set_level(logging.DEBUG, logger="wm_async")
    failed = _Seen("listening for changes failed")
    logging.getLogger("wm_async.stores.postgres").addHandler(failed)
    feed = ChangeFeed(dsn=url, channel="c", sender="s", poll_interval=1)
    listener = wm.stores.StoreListener(
        now=lambda: 0.0, real_time=False, wake=lambda: None, changed=changed
    )

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(feed.run, listener)
                await failed.event.wait()
                tg.cancel_scope.cancel()
    finally:
        logging.getLogger("wm_async.stores.postgres").removeHandler(failed)

    assert "cannot use postgresql://postgres@127.0.0.1:1/test?sslpassword=***" in caplog.text
    assert secret not in caplog.text


class _Seen(logging.Handler):
    """Sets ``event`` once a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()
