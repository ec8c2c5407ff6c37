-- Small functions the engine's statements use.

-- Raises an error with a given SQLSTATE, so a statement can refuse from inside an
-- expression: the capacity claim of a provisioning request aborts its transaction when
-- the chosen server no longer has room (docs/architecture.md, "Provisioning").
CREATE FUNCTION sb_raise(code text, message text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$$;
