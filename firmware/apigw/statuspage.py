"""The status page GET /_gw/ serves: one self-contained HTML document (inline CSS and JS only).

It shows requests/s, the error rate, p50/p95/p99 latency (overall and per service), breaker
states and instance health, read from GET /_gw/stats (statsdoc.py's JSON, same origin, the
browser's own credentials) every 2 s, and says so when that answers 401/403 or fails. Figures
missing from the document show as "-"; latencies arrive in us and show as ms. One column on a
phone (viewport meta, a breakpoint at 640 px), large numbers. A 401 with a Basic challenge makes
the browser ask for a user and password; any other 401 says the page cannot send a token or key.
The reads go to location.origin + "/_gw/stats": a relative URL would carry the user and password
of a page opened as http://user:pass@host/_gw/, and fetch() refuses such a URL.

Owns the page's bytes only: monendpoints.py sends PAGE as text/html; charset=utf-8 behind the
monitoring section's policy. Must not format figures on the device: the browser does. PAGE stays
under 6 KB: it lives in RAM when the module is loaded from .mpy, in flash when frozen. ASCII
only (non-ASCII as HTML entities) and no backslash: the literal is the page byte for byte.
"""

PAGE = b"""<!doctype html><html lang=en><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1">
<title>apigw status</title>
<style>
body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef0f3;color:#222}
main{max-width:72em;margin:auto;padding:.6em;display:grid;gap:.6em;grid-template-columns:1fr 1fr}
header,section,#k>div{background:#fff;border-radius:8px;padding:.7em}
main>*{min-width:0}
header,#k,#s0{grid-column:1/-1}
h1{font-size:1.3em;margin:0}h2{font-size:1em;margin:0 0 .3em}
#k{display:grid;gap:.6em;grid-template-columns:repeat(auto-fit,minmax(9em,1fr))}
#k b{display:block;font-size:2.2em;line-height:1.2}
b,td{font-variant-numeric:tabular-nums}
.l,small{color:#667}
.x{overflow-x:auto}
table{width:100%;border-collapse:collapse}
td,th{padding:.3em;text-align:right;border-bottom:1px solid #e4e6ea;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
.ok{color:#070}.bad{color:#c00}.warn{color:#a60}
#m{margin-top:.4em}#m.bad{background:#fde2e2;padding:.4em;border-radius:6px}
.st #k,.st section{opacity:.5}
@media(max-width:640px){main{grid-template-columns:1fr}#k{grid-template-columns:1fr}
#k>div{display:flex;justify-content:space-between;align-items:center;padding:.3em .7em}
td,th{padding:.3em .2em;font-size:.85em}}
</style>
<main>
<header><h1>apigw status</h1><div id=i class=l>-</div><div id=m>Loading&hellip;</div></header>
<div id=k></div>
<section id=s0><h2>Services <small>latency in ms</small></h2><div class=x><table id=s></table></div></section>
<section hidden><h2>Instances</h2><div class=x><table id=n></table></div></section>
<section hidden><h2>Breakers</h2><div class=x><table id=b></table></div></section>
<section><h2>Answers</h2><div id=c class=l>-</div></section>
</main>
<script>
var U="/_gw/stats",HN=["healthy","unhealthy","unknown","degraded"];
function $(i){return document.getElementById(i)}
function e(s){return String(s).replace(/[&<>"]/g,function(c){return"&#"+c.charCodeAt(0)+";"})}
function d(v){return v==null?"-":e(v)}
function n(v,k){return typeof v=="number"?v.toFixed(k):"-"}
function ms(v){if(typeof v!="number")return"-";v/=1e3;return v.toFixed(v<10?2:v<100?1:0)}
function kb(v){return typeof v=="number"?Math.round(v/1024)+" KB":"-"}
function up(s){if(typeof s!="number")return"-";var D=s/86400|0,h=s/3600%24|0,m=s/60%60|0;
return D?D+"d "+h+"h":h?h+"h "+m+"m":m+"m "+(s%60|0)+"s"}
function bg(v,t){if(v==null)return"-";var c=v===true||v=="closed"||v=="healthy"?"ok":
v===false||v=="open"||v=="unhealthy"?"bad":"warn";return"<span class="+c+">"+d(t==null?v:t)+"</span>"}
function kv(o){var r=[];for(var k in o||{})r.push(e(k)+" <b>"+d(o[k])+"</b>");return r.join(" &middot; ")||"-"}
function cd(l,v,u){return"<div><span class=l>"+l+"</span><b>"+v+(u&&v!="-"?"<small> "+u+"</small>":"")+"</b></div>"}
function tb(id,h,l,f){var t=$(id),s=t.closest("section");s.hidden=!Array.isArray(l);if(s.hidden)return;
var o="<tr><th>"+h.join("<th>");l.forEach(function(r){o+="<tr><td>"+f(r||{}).join("<td>")});
t.innerHTML=o+(l.length?"":"<tr><td>none")}
function draw(j){var L=j.latency_us||{},S=j.slots||{},H=j.heap||{};
$("k").innerHTML=cd("Requests/s",n(j.throughput_rps,1))+cd("Error rate",n(j.error_rate,1),"%")+
cd("p50",ms(L.p50),"ms")+cd("p95",ms(L.p95),"ms")+cd("p99",ms(L.p99),"ms")+cd("Requests",d(j.requests));
$("i").innerHTML="v"+d(j.version)+" &middot; up "+up(j.uptime_s)+" &middot; in flight "+d(j.in_flight)+
" &middot; slots "+d(S.in_use)+"/"+d(S.total)+" &middot; heap "+kb(H.free)+" free, "+kb(H.min_free)+" least";
tb("s",["Service","Resp.","Err %","p50","p95","p99","Breaker"],j.services,function(s){
return[d(s.name==null?s.id:s.name),d(s.responses),n(s.error_rate,1),ms(s.p50_us),ms(s.p95_us),ms(s.p99_us),bg(s.breaker)]});
tb("n",["Pool","Instance","Up","Conn.","Health"],j.instances,function(i){var h=i.health;
return[d(i.pool),d(i.instance),bg(i.up,i.up?"up":"down"),d(i.connections),bg(typeof h=="number"?HN[h]:h)]});
tb("b",["Breaker","State","Fail %","Refused"],j.breakers,function(b){
return[d(b.name==null?b.id:b.name),bg(b.state),n(b.failure_rate,0),d(b.rejected)]});
$("c").innerHTML=kv(j.status_classes)+"<br>Errors: "+kv(j.errors)}
function say(t,c){var m=$("m");m.textContent=t;m.className=c||"";document.body.className=c?"st":""}
function load(){fetch(location.origin+U,{credentials:"same-origin",cache:"no-store"}).then(function(r){var w;
if(r.status==401){w=r.headers.get("WWW-Authenticate")||"";throw{m:/basic/i.test(w)?
"401: not signed in. Reload the page and sign in as an Admin.":
"401: the figures need a token or an API key, which this page cannot send. Read "+U+
" with them, or give monitoring a policy with the basic scheme."}}
if(r.status==403)throw{m:"403: signed in, but not allowed to read the figures (an Admin may)."};
if(!r.ok)throw{m:U+" answered HTTP "+r.status+"; retrying every 2 s."};return r.json()})
.then(function(j){draw(j||{});say("Updated "+new Date().toLocaleTimeString()+", every 2 s")})
.catch(function(x){say(x.m||"Cannot read "+U+" ("+x+"); retrying every 2 s.","bad")})
.then(function(){setTimeout(load,2e3)})}
load()
</script>
"""
