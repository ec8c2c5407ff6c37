-- A user whose status changes (suspended, deleted, active again) has every one of its
-- tokens announced on sb_tokens, as a token's own revocation is (005_api.sql): the
-- engines forget those tokens from their caches and recheck the websockets that use
-- them, so a disabled user's HTTP requests and event streams stop within a second or
-- two of the commit rather than when a cached check runs out (30 s) or never (an open
-- websocket). Token hashes only; nothing secret is in the payload.
CREATE FUNCTION sb_users_status_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  sha text;
BEGIN
  FOR sha IN SELECT token_sha256 FROM api_tokens WHERE user_id = NEW.id LOOP
    PERFORM pg_notify('sb_tokens', sha);
  END LOOP;
  RETURN NULL;
END
$$;
CREATE TRIGGER users_status_changed AFTER UPDATE OF status ON users
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION sb_users_status_notify();
