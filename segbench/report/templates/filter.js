(function(){
var table=document.getElementById('leaderboard'),form=document.getElementById('filters');
if(!table||!form)return;
var rows=Array.prototype.slice.call(table.tBodies[0].rows),q=document.getElementById('q'),
    select=document.getElementById('settings'),shown=document.getElementById('shown'),
    boxes=Array.prototype.slice.call(form.querySelectorAll('input[data-filter]'));
function state(){return new URLSearchParams(location.hash.slice(1));}
function load(){var s=state();
  if(s.has('q'))q.value=s.get('q');
  if(s.has('settings')&&select.querySelector('option[value="'+s.get('settings')+'"]'))select.value=s.get('settings');
  boxes.forEach(function(b){var kind=b.getAttribute('data-filter');
    if(s.has(kind))b.checked=s.get(kind).split(',').indexOf(b.value)>=0;});}
function save(){var s=state();
  if(q.value)s.set('q',q.value);else s.delete('q');
  s.set('settings',select.value);
  ['origin','family'].forEach(function(kind){
    var group=boxes.filter(function(b){return b.getAttribute('data-filter')===kind;}),
        on=group.filter(function(b){return b.checked;}).map(function(b){return b.value;});
    if(on.length===group.length)s.delete(kind);else s.set(kind,on.join(','));});
  history.replaceState(null,'','#'+s.toString());}
function apply(){
  var text=q.value.trim().toLowerCase(),key=select.value,allowed={origin:{},family:{}},count=0;
  boxes.forEach(function(b){allowed[b.getAttribute('data-filter')][b.value]=b.checked;});
  rows.forEach(function(r){
    var ok=r.getAttribute('data-settings')===key&&(!text||r.getAttribute('data-search').indexOf(text)>=0)&&
      allowed.origin[r.getAttribute('data-origin')]&&allowed.family[r.getAttribute('data-family')];
    r.hidden=!ok;if(ok)count++;});
  Array.prototype.forEach.call(document.querySelectorAll('[data-settings-view]'),function(e){
    e.hidden=e.getAttribute('data-settings-view')!==key;});
  shown.textContent=count+' of '+rows.length+' rows shown';
  form.setAttribute('data-shown',String(count));}
load();apply();
form.addEventListener('input',function(){apply();save();});
form.addEventListener('change',function(){apply();save();});
})();
