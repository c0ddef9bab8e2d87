(function(){
function key(cell){var v=cell.getAttribute('data-v');if(v===null)return cell.textContent.trim().toLowerCase();
  return v===''?null:parseFloat(v);}
function sortBy(table,index,dir){
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=key(a.cells[index]),y=key(b.cells[index]);
    if(x===null||y===null)return x===y?0:(x===null?1:-1);
    return (x<y?-1:x>y?1:0)*(dir==='ascending'?1:-1);});
  rows.forEach(function(r){body.appendChild(r);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    if(i===index)th.setAttribute('aria-sort',dir);else th.removeAttribute('aria-sort');});
}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='descending'?'ascending':'descending';
      if(!th.hasAttribute('aria-sort')&&th.getAttribute('data-kind')==='text')dir='ascending';
      sortBy(table,i,dir);});});
  var m=/^([\w.]+)(?::(asc|desc))?$/.exec(new URLSearchParams(location.hash.slice(1)).get('sort')||'');
  if(m&&table.tHead){var th=table.querySelector('th[data-col="'+m[1]+'"]');
    if(th)sortBy(table,th.cellIndex,m[2]==='asc'?'ascending':'descending');}
  table.setAttribute('data-ready','1');
});
})();
