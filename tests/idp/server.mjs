// The OpenID provider of the end-to-end tests: panva's certified oidc-provider with PKCE
// required, one confidential client, and the provider's development login pages (any login
// name is an account; its claims are derived from it).
//
//   node server.mjs PORT REDIRECT_URI CLIENT_SECRET
//
// A test-only control route, POST /__test/jwks/bad and /__test/jwks/good, makes the JWKS
// endpoint publish a key that signs nothing (so every ID token fails its signature check),
// or the real keys again.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, redirectUri, clientSecret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const jwk = (kid) => ({
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid,
  alg: 'RS256',
  use: 'sig',
});
// A new key id at every start, so a restarted provider's tokens name a key the relying
// party has not cached.
const kid = `key-${Date.now().toString(36)}`;
const signing = jwk(kid);
const stranger = jwk(kid); // same kid, other key: a substituted key set
const publicOf = ({ kty, n, e, kid, alg, use }) => ({ kty, n, e, kid, alg, use });
let badJwks = false;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'tessera',
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signing] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@idp.example`, email_verified: true, preferred_username: sub, name: sub };
      },
    };
  },
  cookies: { keys: ['tessera-test-idp'] },
});

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/__test/jwks/bad') { badJwks = true; ctx.status = 204; return; }
  if (ctx.method === 'POST' && ctx.path === '/__test/jwks/good') { badJwks = false; ctx.status = 204; return; }
  if (badJwks && ctx.path === '/jwks') {
    ctx.type = 'application/jwk-set+json';
    ctx.body = { keys: [publicOf(stranger)] };
    return;
  }
  await next();
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening on ${issuer}`);
});
