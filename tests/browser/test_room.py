"""Two or three people, each in their own browser context, using rooms through the UI alone:
create, share, talk, see each other come and go, purge, and every way a visit can end."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from browser_kit import DESKTOP, PHONE, TEST_POW_DIFFICULTY, Link, Person, Relay, fingerprint_words

if TYPE_CHECKING:
    from playwright.sync_api import WebSocketRoute

pytestmark = pytest.mark.browser

People = Callable[..., Person]
CLOCK = re.compile(r"\d\d:\d\d")


def meet(people: People, relay: Relay, **create: int) -> tuple[Person, Person, str]:
    """Alice (desktop) creates a room; Bob (phone) joins it with the link she copied."""
    alice = people("Alice", viewport=DESKTOP)
    bob = people("Bob", viewport=PHONE)
    link = alice.create_room(relay, **create)
    bob.open_link(link)
    bob.wait_in_room()
    return alice, bob, link


def tab_to(person: Person, element_id: str, *, backwards: bool = False) -> None:
    """Presses Tab (or Shift+Tab) until the element has focus, as a keyboard user would."""
    for _ in range(20):
        if person.page.evaluate("document.activeElement?.id") == element_id:
            return
        person.page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"#{element_id} cannot be reached with the keyboard")


def test_two_people_talk_both_ways_on_phone_and_desktop(people: People, relay: Relay) -> None:
    alice, bob, link = meet(people, relay)
    alice_name, bob_name = alice.my_name(), bob.my_name()
    assert alice_name != bob_name

    # Presence, both ways: Alice sees Bob arrive; Bob sees Alice already there, as creator.
    alice.wait_for_notice(f"{bob_name} joined.")
    assert alice.member_names() == [f"{alice_name} you creator", bob_name]
    assert bob.member_names() == [f"{alice_name} creator", f"{bob_name} you"]
    assert alice.page.text_content("#member-count") == "(2 of 8)"

    # Enter sends; Shift+Enter makes a new line; the Send button works too.
    alice.page.fill("#compose", "Hello Bob")
    alice.page.press("#compose", "Shift+Enter")
    alice.page.keyboard.type("second line")
    alice.page.press("#compose", "Enter")
    bob.wait_for_message("Hello Bob\nsecond line")
    bob.page.fill("#compose", "Hi Alice, über 🐶")
    bob.page.click("#send")
    alice.wait_for_message("Hi Alice, über 🐶")
    alice.say("third")
    bob.wait_for_message("third")

    bob_view = bob.messages()
    assert [(m["sender"], m["text"], m["mine"]) for m in bob_view] == [
        (alice_name, "Hello Bob\nsecond line", False),
        (f"{bob_name} (you)", "Hi Alice, über 🐶", True),
        (alice_name, "third", False),
    ]
    assert all(CLOCK.fullmatch(m["time"]) for m in bob_view)
    assert [m["text"] for m in alice.messages()] == [m["text"] for m in bob_view]
    assert alice.page.input_value("#compose") == ""

    # Incoming messages are announced: they land inside a polite live region.
    assert bob.page.locator("#log #messages").count() == 1
    log = bob.page.locator("#log")
    assert log.get_attribute("role") == "log"
    assert log.get_attribute("aria-live") == "polite"

    # The same key gives the same fingerprint; the fragment is gone from the address bar.
    # Both derive it as docs/client.md says (version 2: PBKDF2 over the key and the room id),
    # and show it as nine words in three rows of three, named by the nine words in order.
    parsed = Link.parse(link)
    expected = fingerprint_words(parsed.key, parsed.room)
    assert len(expected) == 9
    for person in (alice, bob):
        assert person.fingerprint() == expected
        listing = person.page.locator("#fingerprint")
        assert listing.get_attribute("aria-label") == " ".join(expected)
        tops = person.page.eval_on_selector_all(
            "#fingerprint li", "lis => lis.map(li => Math.round(li.getBoundingClientRect().top))"
        )
        assert len(set(tops)) == 3 and tops == sorted(tops), f"three rows of three: {tops}"
    for person in (alice, bob):
        assert "#" not in person.page.url
        assert person.page.url == link.split("#")[0]
    # Copy link rebuilds the full link from memory; without a clipboard (plain HTTP, say)
    # it shows the link, selected, in a read-only field instead.
    assert bob.copy_link() == link
    bob.page.evaluate("() => Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    bob.page.click("#copy-link")
    bob.page.wait_for_selector("#link-box:not([hidden])")
    assert bob.page.input_value("#link-field") == link
    assert bob.page.evaluate("() => document.activeElement.id") == "link-field"

    # The client keeps nothing on the device.
    for person in (alice, bob):
        stored = person.page.evaluate(
            "() => ({local: localStorage.length, session: sessionStorage.length, cookie: document.cookie})"
        )
        assert stored == {"local": 0, "session": 0, "cookie": ""}
        assert person.context.cookies() == []

    # Leaving, seen by the other side; the time left counts down.
    assert re.fullmatch(r"\d+:\d\d:\d\d|\d+:\d\d", alice.page.text_content("#time-left") or "")
    bob.page.close()
    alice.wait_for_notice(f"{bob_name} left.")
    assert alice.member_names() == [f"{alice_name} you creator"]
    alice.screenshot("room-alone")


def test_the_widest_fingerprint_fits_three_to_a_row(people: People, relay: Relay) -> None:
    alice, bob, _ = meet(people, relay)
    for person in (alice, bob):
        # The nine widest words of the list, widest first, put in the room's own fingerprint
        # list: every column then holds the widest words any fingerprint can have.
        fit = person.page.evaluate(
            """async () => {
                const { WORDS } = await import('/static/js/words.js');
                const list = document.getElementById('fingerprint');
                const shown = [...list.children].map(li => li.textContent);
                const item = word => Object.assign(document.createElement('li'), { textContent: word });
                // Out of the grid's flow, the probe is as wide as its word, not as its column.
                const probe = list.appendChild(item(''));
                probe.style.position = 'absolute';
                const measure = w => { probe.textContent = w; return [w, probe.offsetWidth]; };
                const width = new Map(WORDS.map(measure));
                const widest = [...WORDS].sort((a, b) => width.get(b) - width.get(a)).slice(0, 9);
                list.replaceChildren(...widest.map(item));
                const right = el => el.getBoundingClientRect().right;
                const tops = [...list.children].map(li => li.offsetTop);
                const fit = {
                    widest,
                    rows: new Set(tops).size,
                    card: [right(list.closest('section')), right(list.closest('aside'))],
                    page: [document.documentElement.scrollWidth, innerWidth],
                };
                list.replaceChildren(...shown.map(item));
                return fit;
            }"""
        )
        assert fit["rows"] == 3, fit
        overflow = fit["card"][0] > fit["card"][1] or fit["page"][0] > fit["page"][1]
        assert not overflow, f"{person.viewport}: {fit}"


def test_purge_with_confirmation_ends_the_room_for_both(people: People, relay: Relay) -> None:
    alice, bob, _ = meet(people, relay)
    assert bob.page.is_hidden("#purge"), "only the creator may purge"

    # Keyboard only: reach Purge from the message box, open the dialog, back out with
    # Escape, then confirm.
    alice.page.focus("#compose")
    tab_to(alice, "purge", backwards=True)
    alice.page.keyboard.press("Enter")
    alice.page.wait_for_selector("#purge-dialog[open]")
    assert alice.page.evaluate("document.activeElement.id") == "purge-cancel"
    alice.page.keyboard.press("Escape")
    alice.page.wait_for_selector("#purge-dialog", state="hidden")
    assert alice.page.evaluate("document.activeElement.id") == "purge"
    alice.say("still here")
    bob.wait_for_message("still here")

    alice.page.focus("#compose")
    tab_to(alice, "purge", backwards=True)
    alice.page.keyboard.press("Enter")
    alice.page.wait_for_selector("#purge-dialog[open]")
    tab_to(alice, "purge-confirm")
    alice.page.keyboard.press("Enter")

    for person in (alice, bob):
        person.wait_for_ending("purged")
        assert person.page.text_content("#ended-title") == "This room was purged"
        # Everything that was said is gone from the page, too.
        assert person.page.locator("#messages li").count() == 0
        assert person.page.is_hidden("#rejoin")
        person.screenshot("ended-purged")


def test_ttl_expiry_ends_the_room(people: People, relay_factory: Callable[..., Relay]) -> None:
    short = relay_factory(
        "--pow-difficulty", str(TEST_POW_DIFFICULTY),
        "--ttl-min", "1", "--ttl-max", "60", "--ttl-default", "6",
    )  # fmt: skip
    alice = people("Alice", viewport=PHONE)
    alice.open_home(short)
    assert alice.page.input_value("#ttl") == "6"
    alice.page.click("#create")
    alice.wait_in_room()
    assert re.fullmatch(r"0:0[0-6]", alice.page.text_content("#time-left") or "")
    alice.say("gone soon")
    alice.wait_for_ending("expired")
    assert alice.page.locator("#messages li").count() == 0
    assert alice.page.text_content("#ended-title") == "This room has expired"
    assert alice.page.evaluate("document.activeElement.id") == "ended-title"
    alice.screenshot("ended-expired")


XSS_PAYLOADS = [
    '<img src=x onerror="window.__xss = 1">',
    "<script>window.__xss = 2</script>",
    '"><svg onload="window.__xss = 3"></svg>',
    '<a href="javascript:window.__xss = 4">click</a>',
    "&lt;b&gt;not bold&lt;/b&gt; &amp; {{7*7}} ${7*7}",
]


def test_markup_in_messages_is_inert_text(people: People, relay: Relay) -> None:
    alice, bob, _ = meet(people, relay)
    for payload in XSS_PAYLOADS:
        alice.say(payload)
    bob.wait_for_message(XSS_PAYLOADS[-1])
    for person in (alice, bob):
        assert [m["text"] for m in person.messages()] == XSS_PAYLOADS
        markup = person.page.eval_on_selector_all(
            "#messages img, #messages script, #messages svg, #messages a, #messages b",
            "nodes => nodes.length",
        )
        assert markup == 0
        assert person.page.evaluate("() => window.__xss") is None


def test_joiner_over_capacity_sees_full(people: People, relay: Relay) -> None:
    _, _, link = meet(people, relay, capacity=2)
    carol = people("Carol", viewport=PHONE)
    carol.open_link(link)
    carol.wait_for_ending("full")
    assert carol.page.text_content("#ended-title") == "This room is full"
    assert carol.page.is_visible("#rejoin")
    carol.screenshot("ended-full")


def test_tampered_secret_sees_wrong_link(people: People, relay: Relay) -> None:
    _, _, link = meet(people, relay)
    parsed = Link.parse(link)
    flipped = ("A" if parsed.secret[0] != "A" else "B") + parsed.secret[1:]
    mallory = people("Mallory", viewport=PHONE)
    mallory.open_link(parsed.text(secret=flipped))
    mallory.wait_for_ending("wrong-link")
    assert mallory.page.text_content("#ended-title") == "This link does not work"
    assert len(mallory.sockets) == 1  # the relay refused the secret (4403)
    mallory.screenshot("ended-wrong-link")


# Well-formed values (canonical base64url of 32 and 16 bytes) for building bad fragments.
KEY = "A" * 43
SECRET = "B" * 21 + "A"
ROOM = "C" * 21 + "A"


@pytest.mark.parametrize(
    "fragment",
    [
        "",
        "#",
        "#k=abc&s=def",
        "#s={secret}",
        "#k={key}",
        "#k={key}&s={secret}&k={key}",
        "#k={key}&s={secret}&x=1",
        "#k={key}=&s={secret}",
        "#k={short_key}&s={secret}",
        "#k={key}&s={noncanonical}",
        "#k={key}&s={secret}%20",
    ],
)
def test_malformed_link_is_refused_before_connecting(people: People, relay: Relay, fragment: str) -> None:
    visitor = people("Visitor")
    bad = fragment.format(key=KEY, secret=SECRET, short_key="A" * 42, noncanonical="B" * 22)
    visitor.open_link(f"{relay.url}/r/{ROOM}{bad}")
    visitor.wait_for_ending("wrong-link")
    assert visitor.sockets == [], "a malformed link must not reach the relay"
    assert "#" not in visitor.page.url


def test_unknown_room_sees_no_such_room(people: People, relay: Relay) -> None:
    visitor = people("Visitor")
    visitor.open_link(f"{relay.url}/r/{ROOM}#k={KEY}&s={SECRET}")
    visitor.wait_for_ending("gone")
    assert visitor.page.text_content("#ended-title") == "No such room"
    visitor.screenshot("ended-no-such-room")


def test_connection_lost_offers_join_again_and_never_rejoins_alone(people: People, relay: Relay) -> None:
    alice = people("Alice", viewport=DESKTOP)
    bob = people("Bob", viewport=PHONE)
    link = alice.create_room(relay)
    # Bob's connections pass through a proxy that can cut them, as a network would.
    routes: list[WebSocketRoute] = []

    def proxy(route: WebSocketRoute) -> None:
        route.connect_to_server()
        routes.append(route)

    bob.page.route_web_socket(re.compile(r"/ws$"), proxy)
    bob.open_link(link)
    bob.wait_in_room()
    first_name = bob.my_name()
    alice.wait_for_notice(f"{first_name} joined.")

    routes[-1].close(code=4503, reason="slow consumer")
    bob.wait_for_ending("lost")
    assert bob.page.text_content("#ended-title") == "Connection lost"
    assert bob.page.text_content("#rejoin") == "Join again"
    alice.wait_for_notice(f"{first_name} left.")
    bob.screenshot("ended-connection-lost")

    bob.page.wait_for_timeout(1500)
    assert len(routes) == 1, "the client must not rejoin on its own"

    bob.page.click("#rejoin")
    bob.wait_in_room()
    assert len(routes) == 2
    second_name = bob.my_name()
    bob.wait_for_notice(f"You joined again as {second_name}.")
    alice.wait_for_notice(f"{second_name} joined.")
    alice.say("welcome back")
    bob.wait_for_message("welcome back")
    bob.say("thanks")
    alice.wait_for_message("thanks")


def test_message_size_limit_is_shown_and_enforced(people: People, relay: Relay) -> None:
    alice, bob, _ = meet(people, relay)
    count = alice.page.text_content("#compose-count") or ""
    match = re.fullmatch(r"0 of ([\d,.\s]+) bytes", count)
    assert match, count
    limit = int(re.sub(r"\D", "", match.group(1)))
    assert 32_000 < limit < 32_768  # the 32 KiB bucket is the largest under 64 KiB
    alice.page.fill("#compose", "x" * (limit + 1))
    assert (alice.page.text_content("#compose-count") or "").startswith("Too long")
    assert alice.page.is_disabled("#send")
    alice.page.press("#compose", "Enter")
    alice.page.fill("#compose", "x" * limit)
    assert alice.page.is_enabled("#send")
    alice.page.click("#send")
    bob.wait_for_message("x" * limit)
    assert len(bob.messages()) == 1, "the oversized message must not have been sent"


def test_pages_load_only_from_the_relay_under_its_csp(people: People, relay: Relay) -> None:
    requested: list[str] = []
    visitor = people("Visitor")
    visitor.page.on("request", lambda request: requested.append(request.url))
    response = visitor.page.goto(relay.url + "/")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    visitor.create_room(relay)
    visitor.say("hello")
    visitor.open_link(f"{relay.url}/r/{ROOM}#k={KEY}&s={SECRET}")
    visitor.wait_for_ending("gone")
    assert requested and all(url.startswith(relay.url + "/") for url in requested), requested
    ws_origin = relay.url.replace("http://", "ws://", 1) + "/"
    assert len(visitor.sockets) == 2
    assert all(url.startswith(ws_origin) for url in visitor.sockets), visitor.sockets

    # The policy is in force, and this suite would notice a violation: an injected inline
    # script does not run, and the browser reports it as an error.
    visitor.expect_error("Content Security Policy")
    visitor.page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.__inline = 1';
            document.head.append(script);
        }"""
    )
    visitor.page.wait_for_function("() => true")
    assert visitor.page.evaluate("() => window.__inline") is None
    assert any("Content Security Policy" in e for e in visitor.errors), visitor.errors
